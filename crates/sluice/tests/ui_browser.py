"""Drives Sluice's web UI in headless Chromium (Debian's chromium and
chromedriver, through selenium), as a user would: sign in, read the grid,
trigger a run, open a log, pause and unpause, and look at a phone-width
page. Saves a screenshot of each step.

Usage: ui_browser.py BASE_URL TOKEN DAG RUN_ID SCREENSHOT_DIR
"""

import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

BASE, TOKEN, DAG, RUN_ID, OUT = sys.argv[1:6]
os.makedirs(OUT, exist_ok=True)
# Never fetch drivers or browsers: use Debian's.
os.environ["SE_OFFLINE"] = "true"


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        "--user-data-dir=" + tempfile.mkdtemp(prefix="sluice-chromium-"),
    ]:
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))


def wait(what, check, timeout=30.0):
    """Polls `check` until it returns something true; that value."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # the live region was swapped mid-read
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def shot(d, name):
    path = os.path.join(OUT, name)
    d.save_screenshot(path)
    print("screenshot", path)


def css(d, selector):
    return d.find_elements(By.CSS_SELECTOR, selector)


def states(d, run_id):
    """The grid's task states for one run, from the page as it is now."""
    return [c.get_attribute("data-state") for c in css(d, "a.cell") if c.get_attribute("data-run-id") == run_id]


def runbar(d, date):
    """The grid column header of the run whose id holds `date`, if any."""
    for bar in css(d, "a.runbar"):
        if date in bar.get_attribute("data-run-id"):
            return bar.get_attribute("data-run-id"), bar.get_attribute("data-state")
    return None


def still_same_page(d):
    assert d.execute_script("return window.__sluice_marker") == 42, "the page was reloaded"


d = browser()
try:
    # Reads are closed while a token is set: the UI asks to sign in.
    d.get(BASE + "/")
    wait("the sign-in page", lambda: d.current_url.endswith("/ui/login"))
    shot(d, "01-sign-in.png")
    d.find_element(By.ID, "token").send_keys("not-the-token")
    d.find_element(By.ID, "sign-in-submit").click()
    wait("a refusal", lambda: "not the API token" in d.page_source)
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.ID, "sign-in-submit").click()
    link = wait("the job list", lambda: [a for a in css(d, "a.job") if a.text == DAG])
    assert "/ui/login" not in d.current_url
    # The token is in no URL and not readable by scripts (HttpOnly).
    assert TOKEN not in d.current_url and TOKEN not in d.page_source
    assert TOKEN not in d.execute_script("return document.cookie")
    # The footer names the replica that answered (host name and pid).
    assert d.find_element(By.ID, "replica").text.rsplit("-", 1)[-1].isdigit()
    shot(d, "02-jobs.png")

    # The grid shows the example run's tasks, all succeeded.
    link[0].click()
    wait("the grid", lambda: states(d, RUN_ID))
    tasks = [t.text.split()[0] for t in css(d, "th.task")]
    assert len(tasks) >= 2, tasks
    assert states(d, RUN_ID) == ["success"] * len(tasks), states(d, RUN_ID)
    nodes = css(d, "svg.graph g.node")
    assert len(nodes) == len(tasks), (len(nodes), tasks)
    assert all("success" in n.get_attribute("class") for n in nodes)
    shot(d, "03-dag.png")

    # Trigger: the new run appears without a page reload.
    d.execute_script("window.__sluice_marker = 42")
    d.execute_script("document.getElementById('logical_date').value = '2026-11-23'")
    d.find_element(By.ID, "trigger").click()
    wait("the triggered run in the grid", lambda: runbar(d, "2026-11-23"))
    assert "Queued" in d.find_element(By.ID, "flash").text, d.find_element(By.ID, "flash").text
    # The same date again is refused with a message, not silently.
    d.find_element(By.ID, "trigger").click()
    wait("the conflict message", lambda: "already has a run" in d.find_element(By.ID, "flash").text)
    still_same_page(d)
    shot(d, "04-triggered.png")

    # Pause stops new runs: a run triggered while paused stays queued.
    d.find_element(By.ID, "pause").click()
    wait("the paused badge", lambda: css(d, "#paused"))
    d.execute_script("document.getElementById('logical_date').value = '2026-11-22'")
    d.find_element(By.ID, "trigger").click()
    wait("the run triggered while paused", lambda: runbar(d, "2026-11-22"))
    time.sleep(5)  # several scheduler passes and UI refreshes
    held, state = wait("a fresh read of it", lambda: runbar(d, "2026-11-22"))
    assert state == "queued", f"{held} is {state} while the job is paused"
    still_same_page(d)
    shot(d, "05-paused.png")
    d.find_element(By.ID, "unpause").click()
    wait("the held run to start once unpaused", lambda: runbar(d, "2026-11-22")[1] != "queued", timeout=60)
    wait("the active badge", lambda: css(d, "#active"))
    still_same_page(d)

    # A task's log opens from its square in the grid.
    first = [c for c in css(d, "a.cell") if c.get_attribute("data-run-id") == RUN_ID][0]
    task = first.get_attribute("data-task")
    first.click()
    log = wait("the log", lambda: css(d, "#log"))
    text = log[0].text
    assert "attempt 1 started" in text, text
    assert task in d.find_element(By.TAG_NAME, "h1").text
    shot(d, "06-log.png")

    # The run page: every task with its rows and a bar in the timeline.
    d.get(f"{BASE}/ui/dags/{DAG}/runs/{RUN_ID}")
    rows = wait("the task table", lambda: css(d, "table.tasks tbody tr[data-task]"))
    assert len(rows) == len(tasks), len(rows)
    assert len(css(d, ".gantt-bar")) == len(tasks)
    assert d.find_element(By.ID, "run-state").text == "success"
    shot(d, "07-run.png")

    # A phone's width: the page itself does not scroll sideways (wide
    # tables scroll inside their own box).
    d.set_window_size(390, 844)
    d.get(f"{BASE}/ui/dags/{DAG}")
    wait("the grid", lambda: states(d, RUN_ID))
    overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than the phone"
    shot(d, "08-phone.png")
    print("ok")
finally:
    d.quit()
