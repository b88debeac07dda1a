// Small page behaviours: SLA countdowns, the live item count, keyboard shortcuts. No build step.
(function () {
  // A key pressed for the previous item (a decision moves on to the next) never acts on this one:
  // an item page's shortcuts work only once it has been on screen this long.
  const SHORTCUTS_ARMED_AT = performance.now() + 800;
  function formatRemaining(ms) {
    const late = ms < 0;
    let s = Math.floor(Math.abs(ms) / 1000);
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const text = (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
    return late ? "overdue " + text : text;
  }
  // Pushes arrive as <template data-op="upsert|remove" data-target="item-N"> patches, so a row
  // that is already there (from the snapshot) or already gone is no error.
  function applyPatches() {
    const patches = document.getElementById("queue-patches");
    const items = document.getElementById("queue-items");
    if (!patches || !items) return;
    patches.querySelectorAll("template[data-op]").forEach(function (patch) {
      const existing = document.getElementById(patch.dataset.target);
      if (patch.dataset.op === "remove") {
        if (existing) existing.remove();
      } else {
        const row = patch.content.firstElementChild;
        if (!row) return;
        if (existing) existing.replaceWith(row); else items.appendChild(row);
        if (window.htmx) window.htmx.process(row);
      }
      patch.remove();
    });
  }
  function tick() {
    document.querySelectorAll("[data-sla-due]").forEach(function (el) {
      const due = Date.parse(el.getAttribute("data-sla-due"));
      if (isNaN(due)) return;
      const remaining = due - Date.now();
      el.textContent = formatRemaining(remaining);
      el.classList.toggle("overdue", remaining < 0);
    });
    const count = document.getElementById("queue-count");
    const items = document.getElementById("queue-items");
    const empty = document.getElementById("queue-empty");
    if (items) {
      const rows = items.querySelectorAll(".item").length;
      if (count) count.textContent = rows;
      if (empty) empty.hidden = rows > 0;
    }
  }
  function typing(event) {
    const t = event.target;
    return t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].indexOf(t.tagName) >= 0);
  }
  function moveInQueue(step) {
    const rows = Array.prototype.slice.call(document.querySelectorAll("#queue-items .item"));
    if (!rows.length) return;
    const current = rows.indexOf(document.activeElement);
    const next = current < 0 ? 0 : Math.min(rows.length - 1, Math.max(0, current + step));
    rows[next].focus();
  }
  function openConfirm(button) {
    const dialog = document.getElementById(button.dataset.confirm);
    if (dialog && !dialog.open) dialog.showModal();
  }
  document.addEventListener("click", function (event) {
    const opener = event.target.closest("[data-confirm]");
    if (opener) { openConfirm(opener); event.preventDefault(); return; }
    const closer = event.target.closest("[data-close]");
    if (closer) { const dialog = document.getElementById(closer.dataset.close); if (dialog) dialog.close(); }
  });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event)) return;
    if (document.querySelector("dialog[open]")) return;  // a confirm step takes no shortcuts
    const nav = document.querySelector("[data-page=item]");
    const key = event.key;
    if (nav && performance.now() < SHORTCUTS_ARMED_AT) return;
    if (document.querySelector("[data-page=queue]")) {
      if (key === "j") { moveInQueue(1); event.preventDefault(); }
      if (key === "k") { moveInQueue(-1); event.preventDefault(); }
      return;
    }
    if (!nav) return;
    if (key === "a") {
      const approve = document.getElementById("approve");
      if (approve && approve.dataset.confirm) { openConfirm(approve); event.preventDefault(); }
      else if (approve) { approve.click(); event.preventDefault(); }
    } else if (key === "d") {
      const reason = document.getElementById("reason");
      if (reason) { reason.focus(); event.preventDefault(); }
    } else if (key === "e") {
      const first = document.querySelector("#edit-form input:not([type=hidden]), #edit-form select, #raw-json");
      if (first) { first.focus(); event.preventDefault(); }
    } else if (key === "j" && nav.dataset.next) {
      window.location = nav.dataset.next;
    } else if (key === "k" && nav.dataset.previous) {
      window.location = nav.dataset.previous;
    }
  });
  // A refused edit comes back with the field it is about marked: the cursor goes straight there.
  function focusRefusedField() {
    const invalid = document.querySelector("#edit-form [aria-invalid=true], #json-form [aria-invalid=true]");
    if (invalid) invalid.focus();
  }
  document.addEventListener("DOMContentLoaded", function () { tick(); focusRefusedField(); });
  function setLive(state) {
    const queue = document.querySelector("[data-page=queue]");
    const label = document.getElementById("queue-live-state");
    if (queue) queue.dataset.live = state;
    if (label) label.textContent = state === "connected" ? "live" : "reconnecting…";
  }
  // New rows are read out to screen readers (the #queue-announcer live region): whatever brought
  // them, a push or a reconnect's snapshot. Rows that were already there are not announced again.
  let rowsBefore = null;
  function rowIds() {
    return Array.prototype.map.call(document.querySelectorAll("#queue-items .item"), function (r) { return r.id; });
  }
  function announce() {
    const announcer = document.getElementById("queue-announcer");
    if (!announcer || rowsBefore === null) return;
    const before = new Set(rowsBefore);
    const added = rowIds().filter(function (id) { return !before.has(id); });
    rowsBefore = null;
    if (!added.length) return;
    const first = document.getElementById(added[0]);
    const what = first ? (first.querySelector(".action-line") || first).textContent.replace(/\s+/g, " ").trim() : "";
    const total = document.querySelectorAll("#queue-items .item").length;
    announcer.textContent = (added.length === 1 ? "New held action: " + what : added.length + " new held actions, first: " + what)
      + ". " + total + " waiting.";
  }
  document.addEventListener("htmx:wsBeforeMessage", function () { rowsBefore = rowIds(); });
  document.addEventListener("htmx:wsAfterMessage", function () { applyPatches(); tick(); announce(); setLive("connected"); });
  document.addEventListener("htmx:wsClose", function () { setLive("disconnected"); });
  setInterval(tick, 1000);
})();
