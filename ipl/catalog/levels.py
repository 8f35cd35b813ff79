"""Key levels: which attribute values another listing's evidence may state about the seller's item.

* ``product`` (brand, model): shared by every SKU of a product (SPU), so an identical listing
  or the agreement of similar listings of the same product may state them;
* ``sku`` (colour, storage, size, ...): differ between SKUs of one product, so only an
  identical match (same SKU), a classifier on the seller's photos or the seller may state them;
* ``listing`` (condition, accessories and every key not named): this seller's own item; never
  taken from references, only from the seller.

The levels are written into ``templates.yaml`` by ``ipl prepare`` (operator-editable beside
each template) and read from there by the index calibration, serving and evaluation, so one
file decides them for the whole run.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ipl.config import Strict

Level = Literal["product", "sku", "listing"]
LEVELS = ("product", "sku", "listing")


class KeyLevels(Strict):
    """Attribute keys by level (case-insensitive); keys named nowhere are listing-level."""

    product: list[str] = Field(default_factory=lambda: ["Brand", "Model", "品牌", "型号"],
                               description="Product-level keys (same for every SKU of a product), broadest first: "
                               "a value of a later key (a model) is stated only together with the value of each "
                               "earlier key (its brand) that the listings giving it agree on.")
    sku: list[str] = Field(default_factory=lambda: ["Color", "Colour", "Storage", "Size", "Config", "Lens", "Edition",
                                                    "Case size", "Material", "Capacity", "颜色", "容量", "尺码"],
                           description="SKU-level keys (differ between SKUs of one product).")

    def level(self, key: str) -> Level:
        k = str(key).strip().lower()
        if k in {p.lower() for p in self.product}:
            return "product"
        if k in {s.lower() for s in self.sku}:
            return "sku"
        return "listing"

    def broader(self, key: str) -> list[str]:
        """The product-level keys named before ``key`` in :attr:`product` (lower-cased): the keys a
        value of ``key`` may imply (a model implies its brand, never the other way)."""
        order = [p.strip().lower() for p in self.product]
        k = str(key).strip().lower()
        return order[: order.index(k)] if k in order else []

    def scored(self, keys) -> list[str]:
        """The keys that evidence can state (product and SKU level), in their order."""
        return [k for k in keys if self.level(k) != "listing"]
