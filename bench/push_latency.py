"""Push latency: from a request being held to its row appearing in a reviewer's real browser.

    .venv/bin/python bench/push_latency.py [--items 100] [--spacing-ms 100] [--mode embedded|services]

Starts reviewq (fake model backend, so every request is decided in milliseconds) against a fresh
database, logs the seeded ``reviewer`` into Debian's Chromium (headless, through Playwright; no
browser is downloaded) and opens the live queue (/review/). Once the WebSocket snapshot has
arrived, a MutationObserver on the page records ``performance.timeOrigin + performance.now()``
when each ``#item-N`` row is inserted into the document, and again at the next animation frame
(about when it is painted); an ``htmx:wsBeforeMessage`` listener records when the push message
itself arrived. Then ``--items`` risky requests (``cancel_pending_order`` with the 16 retail
tools: the seeded policy holds it for a human) are posted ``--spacing-ms`` apart without
``wait_ms``.

Held time: the request's transition to ``awaiting_review`` (Request.updated_at, written by that
guarded UPDATE; nothing updates the row afterwards), and the ReviewItem's ``created_at`` (a few
statements later, same transaction). Browser and server read the same wall clock. The server runs
under bench/probe.py, which timestamps ``live.push_item_added`` (on_commit: render the row, send
it to the channel layer), so the latency splits into: held -> push start (the rest of the
transaction, commit), push start -> WebSocket message in the page (render, channel layer,
consumer, socket), message -> row in the DOM (htmx out-of-band swap, review.js), DOM -> next
frame. ``push (render + send)`` is how long the pipeline's thread is held by the push call.

- ``embedded``: SQLite, in-memory channel layer; the pipeline thread hands the send to the
  server's event loop.
- ``services``: PostgreSQL, Redis (channels-redis), a Celery worker process pushes through Redis
  to the web process's consumer.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from harness import (
    PASSWORD,
    RETAIL_TOOLS,
    Client,
    epoch,
    free_port,
    machine,
    request_body,
    stack,
    summary,
    table,
    write_results,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MESSAGE = 'Please cancel pending order order_id=#W{n} reason="no longer needed"'
OBSERVER = """() => {
  window.__seen = {}; window.__painted = {}; window.__arrived = {};
  const now = () => performance.timeOrigin + performance.now();
  new MutationObserver((mutations) => {
    const t = now();
    for (const mutation of mutations) {
      for (const node of mutation.addedNodes) {
        if (node.nodeType !== 1) continue;
        for (const el of [node, ...node.querySelectorAll('[id^="item-"]')]) {
          if (el.id && el.id.startsWith("item-") && !(el.id in window.__seen)) {
            window.__seen[el.id] = t;
            requestAnimationFrame(() => { window.__painted[el.id] = now(); });
          }
        }
      }
    }
  }).observe(document.body, {childList: true, subtree: true});
  document.addEventListener("htmx:wsBeforeMessage", (event) => {
    const t = now();
    for (const match of String(event.detail.message).matchAll(/data-target="(item-\\d+)"/g)) {
      if (!(match[1] in window.__arrived)) window.__arrived[match[1]] = t;
    }
  });
}"""


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    services = args.mode == "services"
    with stack(
        f"push_{args.mode}", database="postgres" if services else "sqlite", redis=services, keep=args.keep
    ) as st:
        key = st.seed()
        port = free_port()
        st.start_uvicorn(port, probe=True)
        if services:
            st.start_celery(probe=True)
        base = f"http://127.0.0.1:{port}"
        client = Client(port, key)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"{base}/accounts/login/?next=/review/")
            page.fill("#id_username", "reviewer")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/review/")
            page.wait_for_selector("[data-page=queue][data-live=connected]", timeout=15000)
            page.evaluate(OBSERVER)
            # One request outside the timed set: the first push pays for imports and template loading.
            client.request("POST", "/api/v1/requests", request_body(MESSAGE.format(n=1), RETAIL_TOOLS))
            page.wait_for_function("Object.keys(window.__seen).length >= 1", timeout=30000)
            page.evaluate("() => { window.__seen = {}; window.__painted = {}; window.__arrived = {}; }")
            warm_ids = {row["id"] for row in st.query("SELECT id FROM reviewq_reviewitem")}

            started = time.monotonic()
            for index in range(args.items):
                delay = started + index * args.spacing_ms / 1000 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                status, answer = client.request(
                    "POST", "/api/v1/requests", request_body(MESSAGE.format(n=2378156 + index), RETAIL_TOOLS)
                )
                if status != 202:
                    raise RuntimeError(f"POST answered {status}: {answer}")
            try:
                page.wait_for_function(f"Object.keys(window.__seen).length >= {args.items}", timeout=30000)
            except Exception:  # noqa: BLE001 - report what did arrive
                print("not every item appeared within 30 s")
            page.wait_for_timeout(200)  # the last animation frames
            seen = page.evaluate("window.__seen")
            painted = page.evaluate("window.__painted")
            arrived = page.evaluate("window.__arrived")
            browser.close()
        client.close()
        time.sleep(0.5)  # the probe flushes every 0.2 s
        items = st.query(
            "SELECT i.id, i.created_at, r.updated_at, r.status FROM reviewq_reviewitem i "
            "JOIN reviewq_request r ON r.id = i.request_id"
        )
        pushes = {
            push["item"]: push
            for record in st.probe_records()
            if record["kind"] == "pipeline"
            for push in record.get("push", [])
        }
        st.stop()
    return analyse(args, items, warm_ids, seen, painted, arrived, pushes)


def analyse(
    args: argparse.Namespace,
    items: list[dict[str, Any]],
    warm_ids: set[Any],
    seen: dict[str, float],
    painted: dict[str, float],
    arrived: dict[str, float],
    pushes: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    series: dict[str, list[float]] = {
        name: []
        for name in (
            "held -> row in DOM",
            "ReviewItem.created_at -> row in DOM",
            "held -> next frame",
            "held -> push start",
            "push (render + send)",
            "push start -> WS message in page",
            "WS message -> row in DOM",
        )
    }
    missing = []
    for item in items:
        if item["id"] in warm_ids:
            continue
        dom_id = f"item-{item['id']}"
        held = epoch(item["updated_at"])
        if dom_id not in seen:
            missing.append(item["id"])
            continue
        shown = seen[dom_id] / 1000
        series["held -> row in DOM"].append((shown - held) * 1000)
        series["ReviewItem.created_at -> row in DOM"].append((shown - epoch(item["created_at"])) * 1000)
        if dom_id in painted:
            series["held -> next frame"].append((painted[dom_id] / 1000 - held) * 1000)
        push = pushes.get(item["id"])
        if push:
            series["held -> push start"].append((push["t0"] - held) * 1000)
            series["push (render + send)"].append((push["t1"] - push["t0"]) * 1000)
            if dom_id in arrived:
                series["push start -> WS message in page"].append(
                    (arrived[dom_id] / 1000 - push["t0"]) * 1000
                )
        if dom_id in arrived:
            series["WS message -> row in DOM"].append((shown - arrived[dom_id] / 1000) * 1000)
    summaries = {name: summary(values) for name, values in series.items()}
    print(
        f"\n{args.mode}: {len(series['held -> row in DOM'])} of {args.items} held items appeared "
        f"(missing: {missing[:10]}), posted {args.spacing_ms} ms apart"
    )
    print(
        table(
            ["push latency, ms", "n", "p50", "p95", "mean", "max"],
            [
                (name, s.get("n", 0), s.get("p50"), s.get("p95"), s.get("mean"), s.get("max"))
                for name, s in summaries.items()
            ],
        )
    )
    return {
        "machine": machine(),
        "args": vars(args),
        "summaries": summaries,
        "missing": missing,
        "series": series,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--spacing-ms", type=float, default=100)
    parser.add_argument("--mode", choices=["embedded", "services"], default="embedded")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    report = run(args)
    path = write_results(f"push_latency-{args.mode}", report)
    print(f"wrote {path.relative_to(path.parent.parent.parent)}")


if __name__ == "__main__":
    main()
