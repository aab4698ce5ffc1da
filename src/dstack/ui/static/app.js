// dstack web UI: times (local or UTC), theme, confirmations, the runs list's selection,
// and the tab's one live stream (SSE).
"use strict";
(function () {
  function stored(key) { try { return localStorage.getItem(key); } catch (e) { return null; } }
  function store(key, value) {
    try { if (value) { localStorage.setItem(key, value); } else { localStorage.removeItem(key); } }
    catch (e) { /* storage disabled: for this page only */ }
  }
  function utc() { return stored("dstack.tz") === "utc"; }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function utcText(d) {
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
  }
  // A time as the reader chose (local or UTC), the other one in its tooltip; logs.js too.
  window.dstackTime = function (d) {
    return utc() ? [utcText(d), d.toLocaleString()] : [d.toLocaleString(), utcText(d)];
  };
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) { return; }
      var shown = window.dstackTime(d);
      el.textContent = shown[0];
      el.title = shown[1];
    });
  }
  function prefs() {
    var tz = document.getElementById("pref-tz"), theme = document.getElementById("pref-theme");
    if (tz) {
      tz.value = utc() ? "utc" : "local";
      tz.addEventListener("change", function () {
        store("dstack.tz", tz.value === "utc" ? "utc" : "");
        localTimes(document);
        document.dispatchEvent(new CustomEvent("dstack:times"));
      });
    }
    if (theme) {
      theme.value = stored("dstack.theme") || "";
      theme.addEventListener("change", function () {
        store("dstack.theme", theme.value);
        if (theme.value) { document.documentElement.setAttribute("data-theme", theme.value); }
        else { document.documentElement.removeAttribute("data-theme"); }
      });
    }
  }
  function picks() {
    // "select all" ticks every unfinished run shown; ticks survive the live refresh
    var all = document.getElementById("pick-all");
    if (!all) { return; }
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="run"][form="stop-runs"]').forEach(function (el) {
        el.checked = all.checked;
      });
    });
  }
  document.addEventListener("submit", function (e) {
    var form = e.target.closest("form[data-confirm]");
    if (!form) { return; }
    var question = form.getAttribute("data-confirm");
    if (form.id === "stop-runs") {
      var n = document.querySelectorAll('input[name="run"][form="stop-runs"]:checked').length;
      if (!n) { e.preventDefault(); window.alert("Select the runs to stop first."); return; }
      question = "Stop " + n + (n === 1 ? " run?" : " runs?");
    }
    if (!window.confirm(question)) { e.preventDefault(); }
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
        var ticked = {};
        target.querySelectorAll("input[type=checkbox][name]:checked").forEach(function (el) {
          ticked[el.name + "=" + el.value] = true;
        });
        target.innerHTML = html;
        target.querySelectorAll("input[type=checkbox][name]").forEach(function (el) {
          if (ticked[el.name + "=" + el.value]) { el.checked = true; }
        });
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
  document.addEventListener("DOMContentLoaded", function () {
    prefs(); picks(); localTimes(document); live();
  });
})();
