#!/usr/bin/env python3
"""The operator console (`GET /console`) in a real headless Chromium, checked
against the API of the node that serves it.

    console_test.py --cluster-dir DIR [--node ID] [--screenshots DIR]
    console_test.py --url http://127.0.0.1:7101 --admin-token T \
        (--token-secret S | --user-token U) [--public-url URL] [--screenshots DIR]

With a dev cluster's directory (`boxoffice dev --data-dir DIR`) it reads the
node's address, the admin token and the user-token secret from
DIR/cluster.json (the hold is made by a user of its own, minted with that
secret). For a node with an `admin_listen`, `--url` is that listener (the
console's) and `--public-url` the public one. It drives Debian's chromium
(`--chromium`, default /usr/bin/chromium) with Playwright for Python, and
checks that:

  1. the page loads with no script error and no Content-Security-Policy
     violation, takes the admin token from `#token=` and drops it from the
     address;
  2. the node, its members and every group's leader, state and term shown equal
     `GET /admin/v1/cluster`, and a group is marked unhealthy exactly when it has
     no leader;
  3. after some traffic the charts have drawn points (rate above zero, p50 and
     p99 latency, line pixels on the canvases), and the request count the page
     read from `/metrics` lies between the node's counts before and after;
  4. an event's seat counts, and every seat's status and colour, equal
     `GET /v1/events/{id}/seats`;
  5. a hold placed through the API turns its seat held on the page (count and
     colour) within a few seconds through the live stream, and its release
     frees it again; the writes chart then shows the `ok` outcome;
  6. the waiting-room figures (when the cluster has a waiting room) and the
     payments table equal the API's.

Screenshots of each step go to `--screenshots` (default: a new temporary
directory, printed). Every wait is bounded (`--timeout` per step, and
`--deadline` for the whole run); the exit status is 1 with a one-line reason on
any failure (a screenshot `failure.png` is taken too).

`--assets-dir DIR` serves the page's own files (`/console/*`) from DIR instead
of the node, to try changes to the page without rebuilding the node (and to
check that this test fails when the page is wrong).
"""

import argparse
import base64
import hashlib
import hmac
import json
import mimetypes
import os
import random
import re
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

# Routes the console leaves out of its traffic charts (console.js OWN_ROUTES).
OWN_ROUTES = {
    "/metrics",
    "/console",
    "/console/",
    "/console/{file}",
    "/admin/v1/cluster",
    "/admin/v1/events/{event_id}/queue",
}
PAYMENT_KINDS = [
    "checkouts", "booked", "booked_late", "late_refunds", "mismatch_refunds",
    "failed", "cancelled", "refunded", "refund_failures",
]
REFRESH_S = 2.0  # how often the page refreshes (console.js REFRESH_MS)


class Failure(Exception):
    """What the page shows is not what the API says (or the page broke)."""


# --------------------------------------------------------------------- API


class Api:
    def __init__(self, url, public_url, admin_token, user_token, timeout):
        # The console's origin (the admin API and /metrics are there too), and
        # the public API's (the same unless the node has an `admin_listen`).
        self.url = url.rstrip("/")
        self.public = (public_url or url).rstrip("/")
        self.admin_token = admin_token
        self.user_token = user_token
        self.timeout = timeout

    def request(self, method, path, token=None, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        base = self.url if path.startswith(("/admin/", "/metrics")) else self.public
        req = urllib.request.Request(base + path, data=data, method=method)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        except (urllib.error.URLError, OSError) as e:
            raise Failure(f"{method} {path}: the node does not answer ({e})") from e
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text

    def get_ok(self, path, token=None):
        status, body = self.request("GET", path, token)
        if status != 200:
            raise Failure(f"GET {path}: {status} {body}")
        return body

    def cluster(self):
        return self.get_ok("/admin/v1/cluster", self.admin_token)

    def seats(self, event_id):
        return self.get_ok(f"/v1/events/{event_id}/seats")

    def metrics(self):
        req = urllib.request.Request(self.url + "/metrics")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.read().decode()
        except (urllib.error.URLError, OSError) as e:
            raise Failure(f"GET /metrics: {e}") from e


def parse_labels(s):
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', s))


def metric_samples(text, name):
    """(labels, value) of every sample of `name` in a Prometheus text page."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^(\w+)(?:\{(.*)\})?\s+(\S+)", line)
        if m and m.group(1) == name:
            out.append((parse_labels(m.group(2) or ""), float(m.group(3))))
    return out


def counted_requests(text):
    """Requests the console's rate counts: every route but its own."""
    return sum(v for labels, v in metric_samples(text, "boxoffice_http_requests_total")
               if labels.get("route") not in OWN_ROUTES)


def hs256_token(secret, user, ttl_s=600):
    """A user token as `boxoffice token` mints one (HS256, `sub`, `exp`, `iat`)."""
    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": user, "exp": now + ttl_s, "iat": now}).encode())
    signing_input = f"{head}.{claims}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{head}.{claims}.{b64(sig)}"


# ------------------------------------------------------------------- waits


def wait_until(what, check, timeout, interval=0.25):
    """Calls `check` until it returns a true value (returned) or `timeout`
    seconds pass; then fails with `what` and the last thing `check` said
    (a `Failure` it raised, or its last value)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            got = check()
            if got:
                return got
            last = got
        except Fatal:
            raise
        except Failure as e:
            last = str(e)
        if time.monotonic() >= deadline:
            raise Failure(f"{what} (after {timeout:.0f} s: {last})")
        time.sleep(interval)


class Mismatch(Failure):
    """A difference that may yet go away (the page refreshes every 2 s)."""


class Fatal(Failure):
    """A failure no waiting can mend."""


def equal_or_say(what, shown, expected):
    if shown != expected:
        raise Mismatch(f"{what}: page shows {shown!r}, API says {expected!r}")
    return True


# -------------------------------------------------------------------- test


class ConsoleTest:
    def __init__(self, args, api, shots):
        self.args = args
        self.api = api
        self.shots = shots
        self.page = None
        self.problems = []  # script errors and CSP violations seen
        self.checks = 0
        self.step_no = 0

    def ok(self, text):
        self.checks += 1
        print(f"  ok  {text}", flush=True)

    def shot(self, name, element=None):
        self.step_no += 1
        path = os.path.join(self.shots, f"{self.step_no:02d}-{name}.png")
        if element:
            self.page.locator(element).screenshot(path=path)
        else:
            self.page.screenshot(path=path, full_page=True)
        print(f"  screenshot {path}", flush=True)

    def text(self, selector):
        return self.page.locator(selector).inner_text().strip()

    def no_problems(self):
        if self.problems:
            raise Failure("the page reported: " + " | ".join(self.problems[:5]))

    # -- the browser

    def open(self, browser):
        context = browser.new_context(viewport={"width": 1440, "height": 1200})
        context.set_default_timeout(self.args.timeout * 1000)
        page = context.new_page()
        self.page = page

        def on_console(msg):
            text = msg.text
            if "Content Security Policy" in text or "Refused to" in text:
                self.problems.append(f"CSP: {text}")
            elif msg.type == "error" and "Failed to load resource" not in text:
                # A 404 of the waiting-room figures of an event without one is
                # an answer the page shows, not an error of the page.
                self.problems.append(f"console error: {text}")

        page.on("console", on_console)
        page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        if self.args.assets_dir:
            self.serve_assets_from(page, self.args.assets_dir)
        return page

    def serve_assets_from(self, page, directory):
        base = self.api.url

        def handle(route):
            path = route.request.url[len(base):].split("#")[0].split("?")[0]
            name = path[len("/console/"):] if path.startswith("/console/") else ""
            name = name or "index.html"
            file = os.path.join(directory, os.path.basename(name))
            if not os.path.isfile(file):
                return route.continue_()
            # The node's own headers (its Content-Security-Policy above all),
            # with the file's bytes.
            resp = route.fetch()
            ctype = mimetypes.guess_type(file)[0] or "application/octet-stream"
            with open(file, "rb") as f:
                body = f.read()
            headers = dict(resp.headers)
            headers["content-type"] = ctype
            headers.pop("content-length", None)
            route.fulfill(status=200, headers=headers, body=body)

        page.route(re.compile(re.escape(base) + r"/console(/.*)?(\?.*)?$"), handle)

    # -- 1. the page and the token

    def loads_and_takes_the_token(self):
        page = self.page
        resp = page.goto(f"{self.api.url}/console#token={self.api.admin_token}")
        if resp is None or resp.status != 200:
            raise Failure(f"GET /console: {resp.status if resp else 'no answer'}")
        csp = resp.headers.get("content-security-policy", "")
        if not csp.startswith("default-src 'self'") or "unsafe-inline" in csp:
            raise Failure(f"Content-Security-Policy is not strict: {csp!r}")
        if resp.headers.get("cache-control") != "no-cache":
            raise Failure(f"Cache-Control: {resp.headers.get('cache-control')!r}")
        self.ok("GET /console: 200 with a strict Content-Security-Policy and no-cache")
        def accepted():
            state = page.locator("#auth-status").get_attribute("data-state")
            if state == "refused":
                raise Fatal("the page says the admin token is refused: " + self.text("#auth-status"))
            return state == "ok"
        wait_until("the admin token is accepted", accepted, self.args.timeout)
        if "token" in page.url:
            raise Failure(f"the token stays in the address: {page.url}")
        self.ok("the token from #token= is accepted and out of the address")
        self.no_problems()

    # -- 2. the cluster panel

    def shown_cluster(self):
        return self.page.evaluate("""() => ({
            node: document.getElementById('node-id').textContent.trim(),
            members: [...document.querySelectorAll('#members tbody tr')].map(tr => ({
                id: Number(tr.dataset.memberId),
                addr: tr.querySelector('.addr').textContent.trim()})),
            groups: [...document.querySelectorAll('#groups tbody tr')].map(tr => ({
                group: Number(tr.dataset.group),
                leader: tr.querySelector('.leader').textContent.trim(),
                state: tr.querySelector('.state').textContent.trim(),
                term: tr.querySelector('.term').textContent.trim(),
                health: tr.dataset.health})),
            badge: document.getElementById('cluster-health').dataset.state,
        })""")

    def cluster_matches(self):
        def check():
            shown = self.shown_cluster()
            api = self.api.cluster()
            equal_or_say("node id", shown["node"], str(api["node_id"]))
            equal_or_say("members", shown["members"],
                         [{"id": m["id"], "addr": m["addr"]} for m in api["members"]])
            expected = [{
                "group": g["group"],
                "leader": "none" if g["leader"] is None else str(g["leader"]),
                "state": g["state"],
                "term": str(g["term"]),
            } for g in api["groups"]]
            shown_groups = [{k: g[k] for k in ("group", "leader", "state", "term")}
                            for g in shown["groups"]]
            if shown_groups != expected:
                wrong = [(a, b) for a, b in zip(shown_groups, expected) if a != b]
                raise Mismatch(f"groups: {len(shown_groups)} shown, {len(expected)} in the API; "
                               f"differing (page, API): {wrong[:3]}")
            leaderless = {g["group"] for g in api["groups"] if g["leader"] is None}
            marked = {g["group"] for g in shown["groups"] if g["health"] == "bad"}
            equal_or_say("groups marked without a leader", marked, leaderless)
            if not leaderless and shown["badge"] == "unhealthy":
                raise Mismatch("the cluster is marked unhealthy with a leader in every group")
            return api

        api = wait_until("the cluster panel equals GET /admin/v1/cluster", check, self.args.timeout)
        self.ok(f"node {api['node_id']}, {len(api['members'])} members and "
                f"{len(api['groups'])} groups (leader, state, term) equal GET /admin/v1/cluster")
        self.shot("cluster", "#cluster-panel")

    # -- 3. the charts

    def traffic(self, event_id, seconds):
        """Reads of the public API for `seconds`, spread over several scrapes."""
        sent = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for path in (f"/v1/events/{event_id}", f"/v1/events/{event_id}/seats?view=rows"):
                self.api.request("GET", path)
                sent += 1
            time.sleep(0.02)
        return sent

    def canvas_ink(self, canvas_id, colours):
        """Pixels of `canvas_id` close to any of `colours` (hex)."""
        return self.page.evaluate("""([id, colours]) => {
            const c = document.getElementById(id);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const rgb = colours.map(h => [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16)));
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
                for (const [r, g, b] of rgb) {
                    if (Math.abs(d[i] - r) < 24 && Math.abs(d[i + 1] - g) < 24 && Math.abs(d[i + 2] - b) < 24) { n++; break; }
                }
            }
            return n;
        }""", [canvas_id, colours])

    def charts_draw(self, event_id):
        before = counted_requests(self.api.metrics())
        sent = self.traffic(event_id, 5.0)
        page_total = wait_until(
            f"the page's request count reaches the {sent} requests sent",
            lambda: (lambda t: t if t and t >= before + sent else None)(
                float(self.page.locator("#rps-now").get_attribute("data-total") or 0)),
            self.args.timeout)
        after = counted_requests(self.api.metrics())
        if not before + sent <= page_total <= after:
            raise Failure(f"the page counted {page_total} requests; /metrics said {before} "
                          f"before {sent} were sent and {after} after")
        self.ok(f"the page's request count from /metrics ({page_total:.0f}) lies between the "
                f"node's before the traffic + {sent} ({before + sent:.0f}) and after ({after:.0f})")

        def drawn():
            h = self.page.evaluate("() => window.boxofficeConsole.history()")
            busy = [i for i, r in enumerate(h["rps"]) if r and r > 0 and h["p50"][i] is not None]
            if not busy:
                return None
            return h, busy

        h, busy = wait_until("the charts show a rate above zero with its latency", drawn,
                             self.args.timeout)
        for i in busy:
            p50, p99 = h["p50"][i], h["p99"][i]
            if not (0 < p50 <= p99 <= 10):
                raise Failure(f"latency point {i}: p50 {p50} s, p99 {p99} s")
        peak = max(h["rps"])
        # Requests sent over 5 s: some interval saw at least a few a second.
        if peak < 2:
            raise Failure(f"the highest rate charted is {peak:.2f}/s after {sent} requests in 5 s")
        for canvas, colours in (("chart-rps", ["#1f8a4c"]), ("chart-latency", ["#2563eb", "#db2777"])):
            points = int(self.page.locator(f"#{canvas}").get_attribute("data-points") or 0)
            ink = self.canvas_ink(canvas, colours)
            if points < 2 or ink < 20:
                raise Failure(f"#{canvas}: {points} points drawn, {ink} line pixels")
        for shown in ("#rps-now", "#p50-now", "#p99-now"):
            if self.text(shown) in ("", "-"):
                raise Failure(f"{shown} shows nothing")
        self.ok(f"charts drawn: peak {peak:.1f} requests/s, p50/p99 "
                f"{self.text('#p50-now')} / {self.text('#p99-now')}, line pixels on both canvases")
        self.shot("charts", "#charts-panel")

    # -- 4. the seat map

    def pick_event(self):
        """A seated event with a free seat and no waiting room, one without
        live holds (whose expiries would keep changing it) if there is one."""
        after, looked, best, best_rank = None, 0, None, -1
        while looked < 300:
            page = self.api.get_ok("/v1/events?limit=100" + (f"&after={after}" if after else ""))
            for d in page["events"]:
                looked += 1
                if d.get("venue") is None or d["venue"]["general_admission"]:
                    continue
                eid = d["event"]["event_id"]
                status, body = self.api.request(
                    "GET", f"/admin/v1/events/{eid}/queue", self.api.admin_token)
                if status == 200:
                    continue
                seats = self.api.seats(eid)
                if seats["available"] >= 1 and len(seats.get("seats", [])) <= 20000:
                    # Best: no live holds and some seats sold (every colour but
                    # held on the map before the test's hold).
                    rank = 2 * (seats["held"] == 0) + (seats["sold"] > 0)
                    if rank > best_rank:
                        best, best_rank = eid, rank
                    if rank == 3:
                        return eid
            after = page.get("next_after")
            if after is None:
                break
        if best:
            return best
        raise Failure("no seated event with a free seat and no waiting room to watch")

    def shown_seats(self):
        return self.page.evaluate("""() => ({
            event: document.getElementById('event-title').dataset.eventId,
            stream: document.getElementById('stream-status').dataset.state,
            capacity: document.getElementById('seat-capacity').textContent.trim(),
            available: document.getElementById('seat-free').textContent.trim(),
            held: document.getElementById('seat-held').textContent.trim(),
            sold: document.getElementById('seat-sold').textContent.trim(),
        })""")

    def counts_match(self, event_id, what):
        def check():
            shown = self.shown_seats()
            api = self.api.seats(event_id)
            equal_or_say(f"event {event_id} stream", shown["stream"], "live")
            equal_or_say(f"event {event_id} counts",
                         {k: shown[k] for k in ("capacity", "available", "held", "sold")},
                         {k: str(api[k]) for k in ("capacity", "available", "held", "sold")})
            return api
        api = wait_until(f"{what}: the seat counts equal GET /v1/events/{event_id}/seats",
                         check, self.args.timeout)
        return api

    def seat_pixel(self, seat_id):
        """The seat's cell as the page knows it, and the colour drawn at its centre."""
        return self.page.evaluate("""(id) => {
            const cell = window.boxofficeConsole.seatCell(id);
            if (!cell) return null;
            const c = document.getElementById('seat-map');
            const x = Math.floor(cell.x + cell.size / 2), y = Math.floor(cell.y + cell.size / 2);
            const p = c.getContext('2d').getImageData(x, y, 1, 1).data;
            return {status: cell.status, rgb: [p[0], p[1], p[2]],
                    colours: window.boxofficeConsole.colours()};
        }""", seat_id)

    def seat_is(self, seat_id, status):
        got = self.seat_pixel(seat_id)
        if got is None:
            raise Mismatch(f"seat {seat_id} is not on the page's map")
        want = got["colours"][status]
        rgb = [int(want[i:i + 2], 16) for i in (1, 3, 5)]
        equal_or_say(f"seat {seat_id} status", got["status"], status)
        if any(abs(a - b) > 8 for a, b in zip(got["rgb"], rgb)):
            raise Mismatch(f"seat {seat_id} is drawn {got['rgb']}, not {status} {want}")
        return True

    def seat_map_matches(self, event_id):
        self.page.fill("#event-id", str(event_id))
        self.page.click("#event-show")
        api = self.counts_match(event_id, "after choosing the event")
        self.ok(f"event {event_id}: capacity {api['capacity']}, free {api['available']}, "
                f"held {api['held']}, sold {api['sold']} shown as the API says")

        def statuses():
            api = self.api.seats(event_id)
            shown = self.page.evaluate(
                "(ids) => ids.map(id => { const c = window.boxofficeConsole.seatCell(id); return c && c.status; })",
                [s["seat_id"] for s in api["seats"]])
            wrong = [(s["seat_id"], got, s["status"]) for s, got in zip(api["seats"], shown)
                     if got != s["status"]]
            if wrong:
                raise Mismatch(f"{len(wrong)} seats differ (seat, page, API): {wrong[:5]}")
            return api
        api = wait_until("every seat's status equals the API's", statuses, self.args.timeout)
        by_status = {}
        for s in api["seats"]:
            by_status.setdefault(s["status"], s["seat_id"])
        for status, seat in by_status.items():
            self.seat_is(seat, status)
        self.ok(f"all {len(api['seats'])} seats have the API's status, drawn in its colour "
                f"({', '.join(sorted(by_status))} checked by pixel)")
        self.shot("seat-map", "#seats-panel")
        return api

    # -- 5. a hold through the API, seen through the stream

    def hold_shows_live(self, event_id, api):
        seat = next(s["seat_id"] for s in api["seats"] if s["status"] == "available")
        held_before = api["held"]
        status, hold = self.api.request(
            "POST", "/v1/holds", self.api.user_token,
            {"event_id": event_id, "seat_ids": [seat]},
            {"Idempotency-Key": f"console-test-{uuid.uuid4()}"})
        if status != 201:
            raise Failure(f"POST /v1/holds of seat {seat}: {status} {hold}")
        try:
            self.hold_and_release_show(event_id, seat, hold, held_before)
        finally:
            # Released whatever happened (again if it already was: idempotent).
            self.api.request("DELETE", f"/v1/holds/{hold['hold_id']}", self.api.user_token)

    def hold_and_release_show(self, event_id, seat, hold, held_before):
        t0 = time.monotonic()
        wait_until(f"seat {seat} turns held on the page", lambda: self.seat_is(seat, "held"),
                   self.args.live_timeout)
        seen = time.monotonic() - t0
        shown = self.shown_seats()
        if int(shown["held"]) < held_before + 1:
            raise Failure(f"held count {shown['held']} after holding a seat (was {held_before})")
        self.counts_match(event_id, "after the hold")
        self.ok(f"hold {hold['hold_id']} of seat {seat}: shown held (count and colour) "
                f"{seen:.2f} s after the API answered")
        self.shot("held", "#seats-panel")
        status, body = self.api.request(
            "DELETE", f"/v1/holds/{hold['hold_id']}", self.api.user_token)
        if status != 204:
            raise Failure(f"DELETE /v1/holds/{hold['hold_id']}: {status} {body}")
        wait_until(f"seat {seat} turns free again on the page",
                   lambda: self.seat_is(seat, "available"), self.args.live_timeout)
        self.counts_match(event_id, "after the release")
        self.ok(f"its release shows seat {seat} free again")
        wait_until("the writes chart shows the ok outcome",
                   lambda: self.page.locator("#writes-legend li[data-outcome='ok']").count() > 0,
                   self.args.timeout)
        self.ok("the writes chart has the ok outcome")

    # -- 6. waiting rooms and payments

    def queues_and_payments_match(self):
        text = self.api.metrics()
        rooms = {}
        for labels, v in metric_samples(text, "boxoffice_queue_users"):
            rooms.setdefault(labels["event"], {})[labels["kind"]] = int(v)

        def listed():
            shown = self.page.evaluate("""() => Object.fromEntries(
                [...document.querySelectorAll('#queues tbody tr')].map(tr => [tr.dataset.event,
                    Object.fromEntries([...tr.querySelectorAll('td[data-kind]')].map(td =>
                        [td.dataset.kind, Number(td.textContent)]))]))""")
            return equal_or_say("waiting rooms listed", sorted(shown), sorted(rooms))
        wait_until("the waiting rooms listed equal /metrics'", listed, self.args.timeout)
        if rooms:
            event_id = int(sorted(rooms, key=int)[0])
            self.page.fill("#event-id", str(event_id))
            self.page.click("#event-show")

            def figures():
                def api():
                    return self.api.get_ok(f"/admin/v1/events/{event_id}/queue",
                                           self.api.admin_token)
                shown = self.bracketed(api, """() => ({
                    event: document.getElementById('queue-stats').dataset.eventId,
                    status: document.getElementById('queue-status').textContent.trim(),
                    joined: Number(document.getElementById('queue-joined').textContent),
                    admitted: Number(document.getElementById('queue-admitted').textContent),
                    finished: Number(document.getElementById('queue-finished').textContent),
                    no_shows: Number(document.getElementById('queue-no-shows').textContent)})""",
                    lambda q: {k: q[k] for k in ("joined", "admitted", "finished", "no_shows")})
                before, page, after = shown
                equal_or_say("waiting room shown", page["event"], str(event_id))
                if page["status"] not in (before["status"], after["status"]):
                    raise Mismatch(f"queue status {page['status']!r}, API {after['status']!r}")
                return True
            wait_until("the waiting room's figures equal GET /admin/v1/events/{id}/queue",
                       figures, self.args.timeout)
            self.ok(f"{len(rooms)} waiting room(s) listed; event {event_id}'s figures equal the API's")
        else:
            shown = self.text("#queue-none")
            if "no waiting room" not in shown:
                raise Failure(f"an event without a waiting room shows {shown!r}")
            self.ok("no waiting rooms in the cluster, and the chosen event says it has none")

        def payments():
            def flat(c):
                return {f"{g['group']}/{k}": g["payments"].get(k, 0)
                        for g in c["groups"] if g.get("payments") for k in PAYMENT_KINDS}
            _before, shown, after = self.bracketed(self.api.cluster, """() => {
                const out = {};
                for (const tr of document.querySelectorAll('#payments tbody tr'))
                    for (const td of tr.querySelectorAll('td[data-kind]'))
                        out[tr.dataset.group + '/' + td.dataset.kind] = Number(td.textContent);
                return out;
            }""", flat)
            totals = {}
            for key, v in shown.items():
                kind = key.split("/", 1)[1]
                totals[kind] = totals.get(kind, 0) + v
            shown_total = self.page.evaluate("""() => Object.fromEntries(
                [...document.querySelectorAll('#payments-total td[data-kind]')].map(td =>
                    [td.dataset.kind, td.textContent.trim()]))""")
            expected_total = {k: str(totals[k]) if shown else "-" for k in PAYMENT_KINDS}
            equal_or_say("payment totals (the rows' sums)", shown_total, expected_total)
            return after
        after = wait_until("the payments table equals GET /admin/v1/cluster", payments,
                           self.args.timeout)
        shards = [g for g in after["groups"] if g.get("payments")]
        checkouts = sum(g["payments"]["checkouts"] for g in shards)
        self.ok(f"payments of {len(shards)} shards ({checkouts} checkouts) equal the API's")
        self.shot("sales", "#sales-panel")

    def bracketed(self, api, script, figures):
        """What the page shows (`script`) of counters that only grow, checked to
        lie between the API's `figures` before and after the page's latest
        refresh: equal when nothing changes, and no flake while they move.
        Returns (API before, page, API after)."""
        before = api()
        time.sleep(REFRESH_S + 0.5)  # the page refreshes after `before`
        shown = self.page.evaluate(script)
        after = api()
        lo, hi = figures(before), figures(after)
        page = {k: shown.get(k) for k in hi}
        if set(shown) - set(hi) - {"event", "status"}:
            raise Mismatch(f"the page shows {sorted(set(shown) - set(hi))} the API has not")
        wrong = {k: (lo.get(k), page[k], hi[k]) for k in hi
                 if page[k] is None or not lo.get(k, 0) <= page[k] <= hi[k]}
        if wrong:
            raise Mismatch(f"(API before, page, API after): {dict(list(wrong.items())[:4])}")
        return before, shown, after

    def run(self, browser):
        self.open(browser)
        print(f"console test: {self.api.url}/console in {browser.version}", flush=True)
        self.loads_and_takes_the_token()
        self.cluster_matches()
        event_id = self.pick_event()
        self.charts_draw(event_id)
        api = self.seat_map_matches(event_id)
        self.hold_shows_live(event_id, api)
        self.queues_and_payments_match()
        self.no_problems()
        self.shot("console")


# -------------------------------------------------------------------- main


def resolve(args):
    admin, user, secret, url = args.admin_token, args.user_token, args.token_secret, args.url
    if args.cluster_dir:
        with open(os.path.join(args.cluster_dir, "cluster.json")) as f:
            c = json.load(f)
        nodes = c["nodes"]
        node = next((n for n in nodes if n["id"] == args.node), None) if args.node else nodes[0]
        if node is None:
            raise Failure(f"no node {args.node} in {args.cluster_dir}/cluster.json")
        url = url or "http://" + node["http"]
        admin = admin or c["admin_token"]
        secret = secret or c.get("token_secret")
        user = user or None
    if not url or not admin:
        raise Failure("give --cluster-dir, or --url and --admin-token")
    if not user:
        if not secret:
            raise Failure("give --user-token or --token-secret (or --cluster-dir)")
        # A user of its own: the per-user caps of other users' holds are not its.
        user = hs256_token(secret, f"console-test-{random.randrange(1 << 32):08x}")
    return url, admin, user


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster-dir", help="a dev cluster's directory (its cluster.json)")
    p.add_argument("--node", type=int, help="the node whose console to open (default: the first)")
    p.add_argument("--url", help="the node's base URL serving /console (and the admin API)")
    p.add_argument("--public-url",
                   help="the node's public API, when it is not at --url (a node with admin_listen)")
    p.add_argument("--admin-token")
    p.add_argument("--user-token", help="a user token for the hold")
    p.add_argument("--token-secret", help="the user-token HS256 secret, to mint a user token")
    p.add_argument("--screenshots", help="directory for screenshots (default: a new temp dir)")
    p.add_argument("--chromium", default=os.environ.get("BOXOFFICE_CHROMIUM", "/usr/bin/chromium"))
    p.add_argument("--timeout", type=float, default=20.0, help="seconds each step may wait")
    p.add_argument("--live-timeout", type=float, default=5.0,
                   help="seconds a change may take to show through the live stream")
    p.add_argument("--deadline", type=float, default=240.0, help="seconds for the whole run")
    p.add_argument("--assets-dir", help="serve /console/* from this directory instead of the node")
    p.add_argument("--headed", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    shots = args.screenshots or tempfile.mkdtemp(prefix="console-screenshots-")
    os.makedirs(shots, exist_ok=True)
    print(f"console test: screenshots in {shots}", flush=True)

    def out_of_time(_sig, _frame):
        raise Failure(f"the whole run took longer than {args.deadline:.0f} s")
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.deadline))

    test = None
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("FAIL: Playwright for Python is missing (bash deploy/prereqs.sh installs it)",
              file=sys.stderr)
        return 1
    try:
        url, admin, user = resolve(args)
        api = Api(url, args.public_url, admin, user, timeout=min(args.timeout, 10.0))
        if not os.access(args.chromium, os.X_OK):
            raise Failure(f"no chromium at {args.chromium} (apt-get install chromium)")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=args.chromium, headless=not args.headed,
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
                timeout=args.timeout * 1000)
            try:
                test = ConsoleTest(args, api, shots)
                test.run(browser)
            except BaseException:
                if test and test.page:
                    try:
                        path = os.path.join(shots, "failure.png")
                        test.page.screenshot(path=path, full_page=True, timeout=5000)
                        print(f"  screenshot {path}", file=sys.stderr)
                    except Exception:  # noqa: BLE001 - the failure is what matters
                        pass
                raise
            finally:
                browser.close()
    except (Failure, PlaywrightError, OSError, KeyError, ValueError) as e:
        signal.alarm(0)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"FAIL: {msg}", file=sys.stderr)
        if test and test.problems and not msg.startswith("the page reported"):
            print("the page also reported: " + " | ".join(test.problems[:5]), file=sys.stderr)
        print(f"console test: {test.checks if test else 0} checks passed before the failure; "
              f"screenshots in {shots}", file=sys.stderr)
        return 1
    signal.alarm(0)
    print(f"console test passed: {test.checks} checks; screenshots in {shots}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
