"""A real browser for console tests: Debian's Chromium driven by its ChromeDriver through Selenium (nothing downloaded)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def chromium(profile: Path, *, webgl: bool = False) -> WebDriver:
    """Headless Chromium with a fresh profile in ``profile``; fails (not skips) when the packages are missing.
    ``webgl``: WebGL 2 on SwiftShader, the CPU renderer Chromium ships (the OHIF viewer draws with it); the
    browser's console is kept for :func:`console_messages` either way."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            pytest.fail(f"{path} missing: `make test` installs the Debian package {package}")
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager is not used: the driver's path is given
    options = Options()
    options.binary_location = CHROMIUM
    graphics = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist") if webgl \
        else ("--disable-gpu",)
    for argument in ("--headless=new", "--no-sandbox", *graphics, "--disable-dev-shm-usage",
                     "--window-size=1400,1100", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def sign_in(driver: WebDriver, base: str, name: str, password: str) -> None:
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 20).until(expected_conditions.presence_of_element_located((By.ID, "whoami")))


def screenshot(driver: WebDriver, path: Path) -> Path:
    """A PNG of the page, also copied to $MYONODE_SCREENSHOTS (how docs/ gets its pictures)."""
    driver.save_screenshot(str(path))
    if folder := os.environ.get("MYONODE_SCREENSHOTS"):
        shutil.copy(path, Path(folder) / path.name)
    return path


def loaded_images(driver: WebDriver, css: str) -> int:
    """How many images under ``css`` the browser has decoded (naturalWidth > 0)."""
    return int(driver.execute_script(
        f"return [...document.querySelectorAll({css!r} + ' img')].filter(i => i.complete && i.naturalWidth > 0).length"))


# In OHIF's page: whether a viewport shows an image (its current image is in cornerstone's cache)
FIRST_IMAGE_SHOWN = """
const cs = window.cornerstone;
return !!(cs && cs.getRenderingEngines && cs.getRenderingEngines().some(engine => engine.getViewports().some(v => {
  const id = v.getCurrentImageId && v.getCurrentImageId();
  return !!id && !!cs.cache.getImage(id);
})));
"""


def wait_for_text(driver: WebDriver, element_id: str, text: str, timeout_s: float = 20) -> str:
    """The text of element ``element_id`` once it contains ``text`` (after a click that loads a new page)."""
    WebDriverWait(driver, timeout_s).until(expected_conditions.text_to_be_present_in_element((By.ID, element_id), text))
    return str(driver.find_element(By.ID, element_id).text)


def wait_for_url(driver: WebDriver, part: str, timeout_s: float = 20) -> None:
    """Until the page's address contains ``part`` (a form sent, its answer loaded)."""
    WebDriverWait(driver, timeout_s).until(expected_conditions.url_contains(part))


def console_messages(driver: WebDriver) -> list[str]:
    """What the page wrote to the browser's console since the last call."""
    return [str(entry["message"]) for entry in driver.get_log("browser")]
