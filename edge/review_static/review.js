// Refreshes the status panel from /api/status every few seconds; the page works without it.
"use strict";
(function () {
  const panel = document.getElementById("status");
  if (!panel) return;
  async function refresh() {
    try {
      const response = await fetch("/api/status", { credentials: "same-origin" });
      if (!response.ok) return;
      const s = await response.json();
      const state = document.getElementById("status-state");
      state.textContent = s.state;
      state.className = "state " + s.state.replace(/\s+/g, "-");
      document.getElementById("status-age").textContent = s.age || "";
      const rows = document.getElementById("status-rows");
      rows.replaceChildren(...s.rows.map(([label, value]) => {
        const div = document.createElement("div");
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        dt.textContent = label;
        dd.textContent = value;
        div.append(dt, dd);
        return div;
      }));
      panel.dataset.state = s.state;
    } catch (err) {
      /* the page stays as it is; the next tick tries again */
    }
  }
  setInterval(refresh, 2000);
})();
