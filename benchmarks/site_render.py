"""How long does `python -m bench site` take on the committed records, and is it the same every time?

Run from the repository root:
    python benchmarks/site_render.py [--repeat 3] [--screenshot docs/board.png]

Each repeat is a fresh process (`python -m bench site --out DIR`, what a teacher or CI runs: interpreter start,
imports, reading the records, ranking, writing the pages and copying the libraries), timed from outside. Printed:
each run's seconds, then `site render: best B s, worst W s; renders identical: yes|no` (issue 31 asks under 5 s).

--screenshot PATH also opens the rendered board in headless chromium (Debian's chromium and chromedriver, as
tests/test_site.py does) and saves the page, table and plot, as a PNG: README's docs/board.png is made this way.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def render(out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", "site", "--out", str(out)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def digest(folder: Path) -> str:
    """One hash over every file's path and bytes."""
    hashed = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        hashed.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return hashed.hexdigest()


def screenshot(index: Path, target: Path, width: int = 1400, height: int = 2150) -> None:
    """The board page as the browser draws it, the table and the plot in one tall window."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(index.as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return !!document.querySelector('#board-plot .main-svg')"))
        time.sleep(0.5)  # Plotly's last layout pass
        target.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(target))
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the board page here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seconds, digests = [], set()
        for i in range(args.repeat):
            out = Path(tmp) / f"site{i}"
            seconds.append(render(out))
            digests.add(digest(out))
            print(f"run {i + 1}: {seconds[-1]:.2f} s")
        print(f"site render: best {min(seconds):.2f} s, worst {max(seconds):.2f} s; renders identical: {'yes' if len(digests) == 1 else 'no'}")
        if args.screenshot:
            screenshot(Path(tmp) / "site0" / "index.html", REPO / args.screenshot)
            print(f"wrote {args.screenshot}")


if __name__ == "__main__":
    main()
