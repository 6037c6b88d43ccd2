"""README's screenshots of the review page: `python -m tests.review_screenshots --alerts DIR --out docs/`
serves DIR with `edge-alerts serve` and photographs the list, the newest alert with an evidence
clip, and the tuning report in headless Chromium (the same set-up as tests/test_review_page.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from h2a.edge.alert_store import AlertStore

from .test_review_page import CHROMEDRIVER, CHROMIUM, Server, start_chrome


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--alerts", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("docs"))
    args = p.parse_args()
    if CHROMIUM is None or CHROMEDRIVER is None:
        raise SystemExit("needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    store = AlertStore(args.alerts, readonly=True)
    target = next(a for a in store.alerts() if a.clip and a.snapshot)
    store.close()
    driver = start_chrome("--hide-scrollbars")
    server = Server(args.alerts)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for path, name in (("/", "review-list.png"), (f"/alerts/{target.id}", "review-alert.png"),
                           ("/report", "review-report.png")):  # fmt: skip
            driver.get(server.url + path)
            time.sleep(1.5)  # thumbnails, the clip's first frame
            driver.save_screenshot(str(args.out / name))
            print(f"wrote {args.out / name}")
    finally:
        server.stop()
        driver.quit()


if __name__ == "__main__":
    main()
