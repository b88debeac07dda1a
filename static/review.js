// Small page behaviours: SLA countdowns and the live item count. No build step.
(function () {
  function formatRemaining(ms) {
    const late = ms < 0;
    let s = Math.floor(Math.abs(ms) / 1000);
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const text = (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
    return late ? "overdue " + text : text;
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
    if (count && items) count.textContent = items.querySelectorAll(".item").length;
  }
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:wsAfterMessage", tick);
  setInterval(tick, 1000);
})();
