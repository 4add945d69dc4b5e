"""The results page, ``/jobs/{job_id}``, as a person sees it in a browser.

The meeting video travels the whole platform (tests/fixtures/platform.py); Debian's
chromium, driven headless through Debian's chromedriver (explicit paths, so Selenium
Manager never runs and nothing is downloaded), opens the page, is given the API key
once, and the test reads what is on screen: keyframes that really loaded, placed on a
timeline of chapter bands, the transcript with its times, the summary, the action
items and a cost bar per stage. What the page shows is compared with what the API
answers for the same job. A screenshot is kept under .state/artifacts/.

The first tests need no stack: they ask the app in-process that the page is a static
shell, the same bytes for every job, and that nonsense job ids are a 404.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from gateway.app import create_app
from sinks.db import Pool, transaction
from sinks.jobs import create_job, mark_published
from tests.fixtures.platform import Platform, ProcessedJob
from tests.gateway.conftest import new_customer
from vidinsight.settings import REPO_ROOT, Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW_WIDTH_PX, WINDOW_HEIGHT_PX = 1280, 1000
RENDER_TIMEOUT_SECONDS = 60.0
SCREENSHOT = REPO_ROOT / ".state" / "artifacts" / "results-page.png"
# A keyframe thumbnail's width (results.js), and how far one may sit off its exact spot.
THUMB_WIDTH_PX = 136
PLACEMENT_TOLERANCE_PX = 3.0

T = TypeVar("T")


# ---- without the stack: the shell itself ----------------------------------------------


@pytest.fixture(scope="module")
def app_client(settings: Settings) -> TestClient:
    """The gateway app in-process, lifespan not run: the page routes need no database."""
    return TestClient(create_app(settings))


@pytest.mark.parametrize("path", ["/jobs/" + "x" * 101, "/jobs/caf%C3%A9", "/jobs/a%20b"])
def test_a_job_id_the_api_would_refuse_answers_404_json(app_client: TestClient, path: str) -> None:
    response = app_client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["reason"] == "not_found"


def test_the_page_is_one_static_shell_for_every_job_with_no_secrets(
    app_client: TestClient,
) -> None:
    first = app_client.get("/jobs/job_0123456789abcdef")
    second = app_client.get("/jobs/not-a-job-id")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content  # nothing of the request is echoed into it
    html = first.text
    assert "job_0123456789abcdef" not in html
    assert "vi_" not in html.replace('placeholder="vi_…"', "")  # no key, only the hint
    assert "Bearer" not in html
    assert "<script>" not in html and "<script src=" in html  # no inline script at all
    policy = first.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert first.headers["referrer-policy"] == "no-referrer"


def test_the_page_assets_are_served_and_nothing_else_of_the_package(
    app_client: TestClient,
) -> None:
    assert app_client.get("/pages/results.js").headers["content-type"].startswith("text/javascript")
    assert app_client.get("/pages/results.css").headers["content-type"].startswith("text/css")
    for name in ("app.py", "results.html", "..%2Fapp.py"):
        assert app_client.get(f"/pages/{name}").status_code == 404


def test_the_page_is_not_part_of_the_api_document(app_client: TestClient) -> None:
    paths = app_client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/jobs", "/pages"))]


# ---- in the browser, against the whole platform ---------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Debian chromium; quit at the end, which ends chromedriver and chromium too."""
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not tool.exists():
            pytest.fail(f"{tool} is missing: `deploy/local/stack.sh with ...` installs it")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW_WIDTH_PX},{WINDOW_HEIGHT_PX}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(RENDER_TIMEOUT_SECONDS)
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], T | None], what: str) -> T:
    """``condition``'s first truthy answer, or a failure saying what never appeared."""
    waiting = WebDriverWait(driver, RENDER_TIMEOUT_SECONDS, poll_frequency=0.2)
    found = waiting.until(condition, f"the page never showed {what}")
    assert found is not None  # until() returns only a truthy answer
    return found


def open_with_key(driver: WebDriver, url: str, key: str) -> None:
    """Open the page in a fresh tab state, as someone arriving with a key to type."""
    driver.get(url)
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    field = wait_for(driver, lambda d: _shown(d, "api-key"), "the API key field")
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()


def _shown(driver: WebDriver, element_id: str) -> WebElement | None:
    found = driver.find_elements(By.ID, element_id)
    return found[0] if found and found[0].is_displayed() else None


def _message(driver: WebDriver) -> str | None:
    box = _shown(driver, "message")
    return box.text if box is not None and "error" in str(box.get_attribute("class")) else None


def _texts(driver: WebDriver, selector: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector) if e.is_displayed()]


def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _keyframes_loaded(driver: WebDriver) -> list[dict[str, Any]] | None:
    images: list[dict[str, Any]] = driver.execute_script(
        "return [...document.querySelectorAll('#keyframe-lane img:not(.missing)')].map(i => ({"
        "  done: i.complete && i.naturalWidth > 0, width: i.naturalWidth,"
        "  start: Number(i.closest('figure').dataset.start),"
        "  left: i.getBoundingClientRect().left, visible: i.checkVisibility()}))"
    )
    return images if images and all(i["done"] for i in images) else None


def _box(driver: WebDriver, selector: str) -> dict[str, float]:
    box: dict[str, float] = driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {left: r.left, width: r.width};",
        selector,
    )
    return box


def save_screenshot(driver: WebDriver, target: Path) -> None:
    """The whole page, not just the window: grow the window until the page fits in it."""
    page_height, frame_height = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(WINDOW_WIDTH_PX, max(WINDOW_HEIGHT_PX, page_height + frame_height + 8))
    try:
        assert driver.save_screenshot(str(target)), "chromium took no screenshot"
    finally:
        driver.set_window_size(WINDOW_WIDTH_PX, WINDOW_HEIGHT_PX)


@pytest.fixture(scope="module")
def shown_results(
    platform: Platform, meeting_job: ProcessedJob, browser: WebDriver
) -> dict[str, Any]:
    """The processed meeting's page, rendered with its keyframes; the API's view of it."""
    costs = platform.settled_costs(meeting_job.job_id)
    with platform.client() as client:
        insights = client.get(f"/v1/jobs/{meeting_job.job_id}/insights").raise_for_status().json()
    open_with_key(browser, f"{platform.gateway_url}/jobs/{meeting_job.job_id}", platform.api_key)
    wait_for(browser, lambda d: _shown(d, "results"), "the results")
    images = wait_for(browser, _keyframes_loaded, "its keyframes loaded")
    return {"insights": insights, "costs": costs, "images": images}


def test_the_results_page_shows_the_job_as_the_api_describes_it(
    platform: Platform,
    meeting_job: ProcessedJob,
    browser: WebDriver,
    shown_results: dict[str, Any],
    tmp_path: Path,
) -> None:
    """One look at the page, then each part of it checked (the screenshot is kept first)."""
    shot = tmp_path / "results-page.png"
    save_screenshot(browser, shot)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    print(f"results page screenshot: {SCREENSHOT}")
    assert platform.api_key not in browser.current_url
    assert platform.api_key not in browser.page_source


def test_keyframes_load_and_sit_on_the_chapter_timeline_at_their_scene_start(
    browser: WebDriver, shown_results: dict[str, Any]
) -> None:
    insights, images = shown_results["insights"], shown_results["images"]
    with_keyframe = [s for s in insights["scenes"] if s["keyframe_url"]]
    assert with_keyframe, "the meeting's scenes have keyframes"
    assert len(images) == len(with_keyframe)
    assert all(image["visible"] and image["width"] > 0 for image in images)
    bands = _box(browser, "#chapter-bands")
    duration = _duration(insights)
    for image in images:
        spot = bands["left"] + bands["width"] * image["start"] / duration
        last_left = bands["left"] + bands["width"] - THUMB_WIDTH_PX  # kept inside the lane
        expected = min(spot, last_left)
        assert abs(image["left"] - expected) <= PLACEMENT_TOLERANCE_PX, image


def test_chapters_are_bands_in_order_proportional_to_their_length(
    browser: WebDriver, shown_results: dict[str, Any]
) -> None:
    insights = shown_results["insights"]
    chapters = insights["chapters"]
    assert chapters, "the meeting's analysis has chapters"
    assert _texts(browser, "#chapter-list .chapter-title") == [c["title"] for c in chapters]
    bands = browser.find_elements(By.CSS_SELECTOR, "#chapter-bands .chapter-band")
    assert [b.get_attribute("title") for b in bands] == [
        f"{c['title']} · {clock(c['start_seconds'])}\N{EN DASH}{clock(c['end_seconds'])}"
        for c in chapters
    ]
    whole = _box(browser, "#chapter-bands")["width"]
    duration = _duration(insights)
    for band, chapter in zip(bands, chapters, strict=True):
        share = (chapter["end_seconds"] - chapter["start_seconds"]) / duration
        assert abs(band.rect["width"] / whole - share) < 0.02, (chapter, band.rect)


def test_the_transcript_lines_carry_their_start_times(
    browser: WebDriver, shown_results: dict[str, Any]
) -> None:
    segments = shown_results["insights"]["transcript"]["segments"]
    assert segments
    shown = [
        (
            line.find_element(By.CSS_SELECTOR, ".stamp").text,
            line.find_element(By.CSS_SELECTOR, ".text").text,
        )
        for line in browser.find_elements(By.CSS_SELECTOR, "#transcript .line")
    ]
    assert shown == [(clock(s["start"]), " ".join(s["text"].split())) for s in segments]


def test_the_summary_and_the_action_items_with_their_owners_are_shown(
    browser: WebDriver, shown_results: dict[str, Any]
) -> None:
    insights = shown_results["insights"]
    assert _texts(browser, "#summary") == [" ".join(insights["summary"].split())]
    actions = _texts(browser, "#action-items .action")
    assert len(actions) == len(insights["action_items"])
    owners = _texts(browser, "#action-items .owner")
    assert {"Maria", "Peter"} <= set(owners)
    for shown, item in zip(actions, insights["action_items"], strict=True):
        assert shown.startswith(f"{item['owner']}: {item['task']}")


def test_the_cost_chart_has_one_bar_per_stage_of_the_jobs_costs(
    browser: WebDriver, shown_results: dict[str, Any]
) -> None:
    by_stage = shown_results["costs"]["by_stage"]
    labels = _texts(browser, "#cost-chart .cost-label")
    assert sorted(labels) == sorted(by_stage)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#cost-chart .cost-bar rect")) == len(labels)
    widths = {
        str(bar.get_attribute("data-stage")): bar.find_element(By.TAG_NAME, "rect").rect["width"]
        for bar in browser.find_elements(By.CSS_SELECTOR, "#cost-chart .cost-bar")
    }
    assert all(width > 0 for width in widths.values())
    dearest = max(by_stage, key=lambda stage: by_stage[stage])
    assert widths[dearest] == max(widths.values())


def test_a_wrong_key_shows_the_apis_error_and_no_data(
    platform: Platform, meeting_job: ProcessedJob, browser: WebDriver
) -> None:
    wrong = f"vi_{uuid.uuid4().hex}"
    answer = httpx.get(
        f"{platform.gateway_url}/v1/jobs/{meeting_job.job_id}",
        headers={"Authorization": f"Bearer {wrong}"},
    )
    assert answer.status_code == 401
    open_with_key(browser, f"{platform.gateway_url}/jobs/{meeting_job.job_id}", wrong)
    message = wait_for(browser, _message, "an error")
    assert answer.json()["error"]["message"] in message
    assert _shown(browser, "results") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#transcript .line, #cost-chart .cost-bar")
    assert _shown(browser, "api-key") is not None  # asked again
    assert browser.execute_script("return sessionStorage.length") == 0  # the bad key is gone


def test_another_customers_key_shows_not_found(
    platform: Platform, meeting_job: ProcessedJob, browser: WebDriver, db_pool: Pool
) -> None:
    stranger = new_customer(db_pool, "results-page-stranger")
    open_with_key(browser, f"{platform.gateway_url}/jobs/{meeting_job.job_id}", stranger.api_key)
    message = wait_for(browser, _message, "an error")
    assert "not found" in message.lower()
    assert _shown(browser, "results") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#transcript .line, #keyframe-lane img")


def test_a_job_on_its_way_shows_its_status_until_it_ends(
    platform: Platform, browser: WebDriver, db_pool: Pool
) -> None:
    """A queued job (never published: no worker will take it) is polled until cancelled."""
    owner = new_customer(db_pool, "results-page-waiting")
    job_id = f"job_{uuid.uuid4().hex}"
    with transaction(db_pool) as conn:
        create_job(conn, job_id=job_id, customer_id=owner.customer_id, source_uri="file:///nowhere")
        mark_published(conn, job_id)  # no outbox relay will ever send it
    open_with_key(browser, f"{platform.gateway_url}/jobs/{job_id}", owner.api_key)
    wait_for(browser, lambda d: _texts(d, "#job-status") == ["queued"], "the queued status")
    assert "0%" in _texts(browser, "#progress-text")[0]
    with httpx.Client(base_url=platform.gateway_url, headers=owner.headers) as client:
        client.delete(f"/v1/jobs/{job_id}").raise_for_status()
    message = wait_for(browser, _message, "that the job ended")
    assert "cancelled" in message
    assert _shown(browser, "results") is None


def _duration(insights: dict[str, Any]) -> float:
    """The timeline's length as the page computes it: the furthest end of anything."""
    ends = [
        insights.get("duration_seconds") or 0.0,
        *(c["end_seconds"] for c in insights["chapters"]),
        *(s["end"] for s in insights["scenes"]),
        *(s["end"] for s in insights["transcript"]["segments"]),
    ]
    return max(1.0, *ends)
