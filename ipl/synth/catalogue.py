"""The synthetic marketplace's catalogue: :mod:`ipl.catalog.catalogue` (moved there: the attribute
library and the tiny model's pretraining read it too, and library packages do not import
``ipl.synth``). Re-exported here for the generator's modules."""
from ipl.catalog.catalogue import (CATALOGUE_YAML, SKU, SPU_LEVEL, Catalogue, Category, Value, slug, stable_hash,
                                   synonym_groups)

__all__ = ["CATALOGUE_YAML", "SKU", "SPU_LEVEL", "Catalogue", "Category", "Value", "slug", "stable_hash",
           "synonym_groups"]
