"""Screenshot of the seller page after a draft of a held-out photo (the README's picture).

    ipl serve &                                   # the application of serve_configs/local.yaml (runs/demo)
    python scripts/seller_page_screenshot.py --run runs/demo --out docs/seller-page.png

Needs Debian's chromium + chromium-driver (make test installs them) and a running application.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--run", default="runs/demo", help="run whose held-out listing is photographed")
    ap.add_argument("--out", default="docs/seller-page.png")
    ap.add_argument("--pick", type=int, default=1, help="which held-out listing")
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args(argv)
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        print("chromium/chromedriver not installed (apt-get install chromium chromium-driver)", file=sys.stderr)
        return 2
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ipl.serve.samples import held_out_examples

    run = Path(args.run)
    examples = held_out_examples(run / "clean" / "listings", run / "index", n=args.pick + 1)
    if len(examples) <= args.pick:
        print(f"no held-out listing with photos in {run} (run make demo first)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "item.jpg"
        photo.write_bytes(examples[args.pick]["photos"][0])
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1300"):
            opts.add_argument(arg)
        browser = webdriver.Chrome(service=Service(driver_bin), options=opts)
        try:
            browser.get(args.url + "/")
            browser.find_element(By.ID, "photos").send_keys(str(photo))
            browser.find_element(By.ID, "submit").click()
            WebDriverWait(browser, args.timeout).until(
                lambda b: b.find_element(By.ID, "status").text in ("done", "error", "halted"))
            time.sleep(0.5)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(args.out)
            print(f"{args.out}: status {browser.find_element(By.ID, 'status').text}")
        finally:
            browser.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
