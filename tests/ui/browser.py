"""Driving Debian's Chromium with Playwright, and the page checks the browser tests share.

Never ``playwright install``: the browser is the system's ``/usr/bin/chromium``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

#: Every visible form control must have an accessible name (a <label>, aria-label or aria-labelledby).
UNLABELLED_CONTROLS = """
() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button'))
  .filter(el => el.offsetParent !== null)
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map(el => el.outerHTML.slice(0, 120))
"""

#: WCAG 2.1 AA contrast of every visible text: 4.5:1, or 3:1 for large text (>= 24px, or >= 18.66px bold).
LOW_CONTRAST = """
() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || seen.has(el)) continue;
    seen.add(el);
    if (!el.offsetParent && getComputedStyle(el).position !== 'fixed') continue;
    if (el.closest('[disabled], .sr-only, .skip-link, [hidden]')) continue;
    const style = getComputedStyle(el);
    const fg = parse(style.color).slice(0, 3);
    const bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const text = el.textContent.trim().slice(0, 30);
    if (ratio < needed) bad.push(`${el.tagName}.${el.className} "${text}" ${ratio.toFixed(2)}`);
  }
  return bad;
}
"""


def launch_args() -> dict[str, Any]:
    return {"executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


def check_accessible(page: Page) -> None:
    unlabelled = page.evaluate(UNLABELLED_CONTROLS)
    assert not unlabelled, f"controls without an accessible name on {page.url}: {unlabelled}"
    low = page.evaluate(LOW_CONTRAST)
    assert not low, f"text below WCAG AA contrast on {page.url}: {low}"


def fits_width(page: Page) -> bool:
    """No horizontal scrolling of the page itself (responsive layout)."""
    return bool(page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1"))
