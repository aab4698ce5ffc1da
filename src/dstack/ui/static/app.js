// dstack web UI: local times, confirmations, and the tab's one live stream (SSE).
"use strict";
(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.textContent = d.toLocaleString(); }
    });
  }
  document.addEventListener("submit", function (e) {
    var form = e.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
  });
  function refresh(target, stamp) {
    var src = target.getAttribute("data-fragment");
    return fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) { return; }
        target.innerHTML = html;
        localTimes(target);
        if (stamp) { stamp.dataset.at = String(Date.now()); stamp.textContent = "updated just now"; }
      });
  }
  function live() {
    var stamp = document.getElementById("updated");
    var target = document.querySelector("[data-fragment]");
    if (!stamp || !target || !window.EventSource) { return; }
    var source = null, pending = false, again = false;
    function update() {
      // one fetch at a time; a change during it is fetched right after
      if (pending) { again = true; return; }
      pending = true;
      refresh(target, stamp).finally(function () {
        pending = false;
        if (again) { again = false; update(); }
      });
    }
    function open() {
      if (source) { return; }
      source = new EventSource("/ui/events");
      source.addEventListener("change", update);
      source.addEventListener("signout", function () { window.location.reload(); });
    }
    function close() { if (source) { source.close(); source = null; } }
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) { close(); } else { open(); update(); }
    });
    setInterval(function () {
      var at = Number(stamp.dataset.at || 0);
      if (at) { stamp.textContent = "updated " + Math.round((Date.now() - at) / 1000) + " s ago"; }
    }, 5000);
    stamp.dataset.at = String(Date.now());
    open();
  }
  document.addEventListener("DOMContentLoaded", function () { localTimes(document); live(); });
})();
