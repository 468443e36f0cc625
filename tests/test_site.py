"""The web board (`python -m bench site`): rendered from the committed records, opened in a real headless
browser (Debian's chromium and chromedriver, driven by Selenium; `.ci/run` installs them), one browser session
for the module. Screenshots go to $BENCH_ARTIFACTS, else test-artifacts/ (git-ignored), for CI to keep."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from urllib.parse import urlparse

import pytest

from bench import config, site

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("BENCH_ARTIFACTS") or REPO / "test-artifacts")


def committed_challenge() -> config.Challenge:
    """The committed board's challenge, its records read from the repository wherever the tests run."""
    challenge = config.load(REPO / "pyproject.toml")
    return dataclasses.replace(challenge, results=str(REPO / challenge.results), test_set=None)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    site.build(committed_challenge(), out)
    return out


@pytest.fixture(scope="module")
def board_rows(built) -> list[dict]:
    return json.loads((built / "board.json").read_text())


@pytest.fixture(scope="module")
def browser():
    # The README's set-up installs them (.ci/run does): a missing browser is a failed check, not a skipped one.
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), \
        "the web board's tests need Debian's chromium and chromium-driver: sudo apt-get install -y chromium chromium-driver"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    # The performance log lists every request the pages make: the test that nothing leaves the site reads it.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def open_page(browser, path: Path, ready: str):
    """Load a page from disk and wait until `ready` (a JavaScript expression) holds."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(path.as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(f"return Boolean({ready})"))


BOARD_READY = "document.querySelector('#board.dataTable') && document.querySelector('#board-plot .main-svg')"


def visible_entries(browser) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.id.replace(/^row-/, ''))"
        ".filter(id => id)")


def column_values(browser, key: str) -> list[str]:
    return browser.execute_script(
        "const i = Array.from(document.querySelectorAll('#board thead th')).findIndex(th => th.dataset.key === arguments[0]);"
        "return Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.cells[i].dataset.order);", key)


def test_the_board_has_one_row_per_entry_and_a_point_per_ok_entry(browser, built, board_rows):
    open_page(browser, built / "index.html", BOARD_READY)
    assert sorted(visible_entries(browser)) == sorted(r["entry"] for r in board_rows)
    ok = [r for r in board_rows if r["status"] == "OK"]
    points = browser.execute_script("return document.getElementById('board-plot').data[0].x.length")
    assert points == len(ok) and browser.find_elements("css selector", "#board-plot .scatterlayer .trace .points path")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "site-board.png"))


def test_a_click_on_the_parameters_header_sorts_and_the_url_keeps_it(browser, built):
    from selenium.webdriver.support.ui import WebDriverWait

    def sorted_by_params(reverse: bool) -> bool:  # the table redraws after the click: wait for it (a loaded CI machine)
        params = [float(v) for v in column_values(browser, "total_params")]
        return params == sorted(params, reverse=reverse) and params != sorted(params, reverse=not reverse)

    open_page(browser, built / "index.html", BOARD_READY)
    browser.find_element("css selector", '#board thead th[data-key="total_params"]').click()
    WebDriverWait(browser, 10).until(lambda d: sorted_by_params(reverse=False))
    assert "sort=total_params.asc" in browser.current_url
    browser.find_element("css selector", '#board thead th[data-key="total_params"]').click()
    WebDriverWait(browser, 10).until(lambda d: sorted_by_params(reverse=True))
    assert sorted_by_params(reverse=True)


def test_the_search_box_and_the_filters_narrow_the_table_and_live_in_the_url(browser, built, board_rows):
    open_page(browser, built / "index.html", BOARD_READY)
    browser.find_element("css selector", ".dt-search input").send_keys("frontier_under")
    expected = sorted(r["entry"] for r in board_rows if "frontier_under" in r["entry"])
    assert expected and sorted(visible_entries(browser)) == expected
    assert "q=frontier_under" in browser.current_url
    # A link with the view in its fragment opens that view: the Pareto front alone.
    open_page(browser, built / "index.html", "true")
    browser.get((built / "index.html").as_uri() + "#pareto=yes")
    browser.refresh()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(lambda d: d.execute_script(f"return Boolean({BOARD_READY})"))
    assert sorted(visible_entries(browser)) == sorted(r["entry"] for r in board_rows if r["pareto"])
    assert browser.find_element("id", "filter-pareto").get_attribute("value") == "yes"


def test_an_entry_page_shows_its_seeds_and_curves(browser, built, board_rows):
    entry = next(r["entry"] for r in board_rows if r["status"] == "OK" and r["seeds"] >= 3)
    open_page(browser, built / "entries" / f"{entry}.html", "document.querySelector('#curves-seed0 .main-svg')")
    curves = browser.execute_script("return Array.from(document.querySelectorAll('.curves')).map(e => e.data.map(t => t.name))")
    assert len(curves) == 3 and all(names == ["loss", "val_loss", "val_accuracy", "learning rate"] for names in curves)
    assert len(browser.find_elements("css selector", "#seeds tbody tr")) == 3
    assert f"python -m bench evaluate submissions/{entry}.py" in browser.find_element("tag name", "pre").text
    browser.save_screenshot(str(ARTIFACTS / "site-entry.png"))


def test_the_history_page_plots_each_tier(browser, built):
    open_page(browser, built / "history.html", "document.querySelector('#history-plot .main-svg')")
    assert browser.execute_script("return document.getElementById('history-plot').data.length") >= 3
    assert browser.find_elements("css selector", "#holders tbody tr")


def test_no_page_loads_anything_from_outside_the_site(browser, built):
    """Run last in the module: the performance log then holds every request every test above made."""
    root = built.resolve().as_uri()
    requests = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    urls = {m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"}
    assert any(url.endswith("assets/plotly.min.js") for url in urls)
    outside = sorted(u for u in urls if not (u.startswith(root) or urlparse(u).scheme in ("data", "blob", "about")))
    assert outside == []


def test_two_renders_of_the_committed_records_are_byte_identical(built, tmp_path):
    site.build(committed_challenge(), tmp_path)
    first = {p.relative_to(built): p.read_bytes() for p in sorted(built.rglob("*")) if p.is_file()}
    second = {p.relative_to(tmp_path): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert first.keys() == second.keys() and first == second


def test_a_hidden_test_set_shows_nothing_per_image(tmp_path):
    """A classroom's records with a hidden test set keep only the count of test images (bench.runner.published);
    even a record that kept more must not put it on a page."""
    challenge = config.from_dict({"dataset": "digits", "seeds": 1, "results": str(tmp_path / "results")})
    bits = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo"
    from bench import results

    record = {"entry": "student", "seed": 0, "dataset": "digits", "status": "OK", "message": "", "total_params": 500,
              "trainable_params": 500, "test_accuracy": 0.9, "epochs": 3, "train_seconds": 1.0, "author": "a", "summary": "s",
              "key": {"config": challenge.protocol_hash(), "hash": "h"}, "test_set": "hidden.npz (360 images)",
              "test_correct": {"images": 360, "bits": bits}, "history": {"loss": [1.0, 0.5], "val_loss": [1.1, 0.6]},
              "finished_at": "2026-01-01T00:00:00+00:00"}
    results.write(results.record_path(challenge.results, "digits", "student", 0), record)
    out = tmp_path / "site"
    site.build(challenge, out)
    for path in out.rglob("*.*"):
        if path.suffix in (".html", ".json"):
            assert bits not in path.read_text() and "test_correct" not in path.read_text()
    assert "student" in (out / "entries" / "student.html").read_text()


def test_the_committed_board_page_screenshot_exists():
    """README shows docs/board.png, made by benchmarks/site_render.py --screenshot from the committed records."""
    assert (REPO / "docs" / "board.png").stat().st_size > 10_000


def test_the_leaderboard_workflow_builds_the_site_and_a_job_of_its_own_deploys_it():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "leaderboard.yml").read_text())
    publish, pages = workflow["jobs"]["publish"], workflow["jobs"]["pages"]
    scripts = [step.get("run", "") for step in publish["steps"]]
    uses = [step.get("uses", "") for step in publish["steps"]]
    assert any("python -m bench site --out site" in s for s in scripts)
    upload = next(step for step in publish["steps"] if step.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "site" and uses.index(upload["uses"]) > next(
        i for i, s in enumerate(scripts) if "bench site" in s)
    # Deploying needs these two permissions and no others; the job checks out and runs nothing of the repository's.
    assert pages["needs"] == "publish" and pages["permissions"] == {"pages": "write", "id-token": "write"}
    assert [step["uses"].split("@")[0] for step in pages["steps"]] == ["actions/deploy-pages"]
    assert pages["environment"]["name"] == "github-pages"
