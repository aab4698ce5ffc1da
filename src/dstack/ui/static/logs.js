// The log viewer: fixed-height rows, only the visible ones in the DOM, pages of lines
// fetched by line number; a live stream (SSE) says how many lines there are. The streams
// shown (stdout, stderr, the runner's messages) are chosen on the server: lines are
// numbered within them. The viewer's settings live in the URL (stream, runner, ts).
"use strict";
(function () {
  var ROW = 20, PAGE = 200, OVERSCAN = 20;
  var view, spacer, base, total = 0, pages = {}, loading = {}, follow = true, generation = 0;
  var matches = [], current = -1, hits = {}, target = -1, source = null, ended = false;

  function el(id) { return document.getElementById(id); }
  function chosen() { return el("log-streams").value; }
  function streams() {
    var value = chosen() === "both" ? "stdout,stderr" : chosen();
    return value + (el("log-runner").checked ? ",runner" : "");
  }
  function query() { return "streams=" + encodeURIComponent(streams()); }
  function pageOf(n) { return Math.floor(n / PAGE); }
  function load(p) {
    if (pages[p] || loading[p]) { return; }
    loading[p] = true;
    var mine = generation;
    fetch(base + "/lines?start=" + p * PAGE + "&count=" + PAGE + "&" + query(), { credentials: "same-origin" })
      .then(function (r) { if (r.status === 401) { location.reload(); } return r.json(); })
      .then(function (body) {
        if (mine !== generation) { return; }  // fetched for other settings
        delete loading[p];
        if (body.total > total) { setTotal(body.total); }
        // a page that is not full yet is kept only until the log grows past it
        pages[p] = { lines: body.lines, full: body.lines.length === PAGE };
        render();
      })
      .catch(function () { delete loading[p]; });
  }
  function setTotal(n) {
    if (n === total) { return; }
    var last = pageOf(Math.max(total - 1, 0));
    Object.keys(pages).forEach(function (k) { if (Number(k) >= last && !pages[k].full) { delete pages[k]; } });
    total = n;
    spacer.style.height = total * ROW + "px";
    document.getElementById("line-count").textContent = total + " lines";
    if (follow) { view.scrollTop = view.scrollHeight; }
    render();
  }
  function render() {
    var first = Math.max(0, Math.floor(view.scrollTop / ROW) - OVERSCAN);
    var last = Math.min(total, Math.ceil((view.scrollTop + view.clientHeight) / ROW) + OVERSCAN);
    var rows = [], mark = chosen() === "both", times = el("log-time").checked;
    for (var p = pageOf(first); p <= pageOf(Math.max(last - 1, 0)) && first < last; p++) {
      var page = pages[p];
      if (!page) { load(p); continue; }
      page.lines.forEach(function (line) {
        if (line.n < first || line.n >= last) { return; }
        var cls = "log-row" + (mark && line.s === "stderr" ? " err" : "") +
          (line.s === "runner" ? " runner" : "") +
          (hits[line.n] ? " hit" : "") + (line.n === target ? " target" : "");
        var stamp = "";
        if (times && line.t) {
          var shown = window.dstackTime(new Date(line.t));
          stamp = '<time class="ts" datetime="' + line.t + '" title="' + shown[1] + '">' + shown[0] + "</time>";
        }
        rows.push('<div class="' + cls + '" style="top:' + line.n * ROW + 'px" data-n="' + line.n +
          '" data-s="' + line.s + '"><a class="ln" href="#L' + (line.n + 1) + '" tabindex="-1">' +
          (line.n + 1) + "</a>" + stamp + line.h + "</div>");
      });
    }
    var html = rows.join("");
    var holder = view.querySelector(".log-rows");
    if (!holder) { holder = document.createElement("div"); holder.className = "log-rows"; view.appendChild(holder); }
    holder.innerHTML = html;
  }
  function goTo(n) {
    follow = false;
    document.getElementById("log-follow").checked = false;
    target = n;
    view.scrollTop = Math.max(0, n * ROW - view.clientHeight / 2);
    history.replaceState(null, "", location.pathname + location.search + "#L" + (n + 1));
    render();
  }
  function showMatch() {
    var label = document.getElementById("log-matches");
    if (!matches.length) { label.textContent = "no matches"; return; }
    label.textContent = (current + 1) + " / " + matches.length + (matches.more ? "+" : "");
    goTo(matches[current]);
  }
  function search(e) {
    e.preventDefault();
    var q = document.getElementById("log-q").value;
    if (!q) { return; }
    fetch(base + "/search?q=" + encodeURIComponent(q) + "&" + query(), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (body) {
        matches = body.matches || []; matches.more = body.more; hits = {};
        matches.forEach(function (n) { hits[n] = true; });
        current = matches.length ? 0 : -1;
        showMatch();
      });
  }
  function step(d) {
    if (!matches.length) { return; }
    current = (current + d + matches.length) % matches.length;
    showMatch();
  }
  function connect() {
    if (source || ended || !window.EventSource) { return; }
    source = new EventSource(base + "/stream?" + query());
    source.addEventListener("lines", function (e) {
      var d = JSON.parse(e.data);
      if (d.runner) { el("log-runner-toggle").hidden = false; }
      setTotal(d.total);
    });
    source.addEventListener("status", function (e) {
      var d = JSON.parse(e.data);
      var el = document.getElementById("job-status");
      el.innerHTML = "";
      var badge = document.createElement("span");
      badge.className = "status s-" + d.status; badge.textContent = d.status;
      el.appendChild(badge);
      if (d.reason && d.reason !== d.status && d.reason !== "done") {
        el.appendChild(document.createTextNode(" " + d.reason.replace(/_/g, " ")));
      }
    });
    source.addEventListener("end", function (e) {
      ended = true; setTotal(JSON.parse(e.data).total); source.close(); source = null;
    });
    source.addEventListener("signout", function () { location.reload(); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    view = document.getElementById("log");
    spacer = view.querySelector(".log-spacer");
    base = view.getAttribute("data-base");
    view.addEventListener("scroll", function () {
      var atEnd = view.scrollTop + view.clientHeight >= view.scrollHeight - ROW * 2;
      if (!atEnd && follow && total * ROW > view.clientHeight) {
        follow = false; document.getElementById("log-follow").checked = false;
      }
      render();
    });
    document.getElementById("log-follow").addEventListener("change", function (e) {
      follow = e.target.checked;
      if (follow) { view.scrollTop = view.scrollHeight; }
    });
    el("log-streams").addEventListener("change", reset);
    el("log-runner").addEventListener("change", reset);
    el("log-time").addEventListener("change", function () { keepInUrl(false); render(); });
    document.addEventListener("dstack:times", render);
    document.getElementById("log-end").addEventListener("click", function () {
      follow = true; document.getElementById("log-follow").checked = true;
      view.scrollTop = view.scrollHeight; render();
    });
    document.getElementById("log-search").addEventListener("submit", search);
    document.getElementById("log-next").addEventListener("click", function () { step(1); });
    document.getElementById("log-prev").addEventListener("click", function () { step(-1); });
    view.addEventListener("keydown", function (e) {
      if (e.key === "End") { view.scrollTop = view.scrollHeight; }
      else if (e.key === "Home") { view.scrollTop = 0; }
      else { return; }
      e.preventDefault(); render();
    });
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) { if (source) { source.close(); source = null; } } else { connect(); }
    });
    start(/^#L(\d+)$/.exec(location.hash));
  });
  function keepInUrl(dropLine) {
    var params = new URLSearchParams(location.search);
    function put(key, value) { if (value) { params.set(key, value); } else { params.delete(key); } }
    put("stream", chosen() === "both" ? "" : chosen());
    put("runner", el("log-runner").checked ? "1" : "");
    put("ts", el("log-time").checked ? "1" : "");
    var search = params.toString();
    history.replaceState(null, "", location.pathname + (search ? "?" + search : "") +
      (dropLine ? "" : location.hash));
  }
  function reset() {
    // other streams: other line numbers; start over at the tail
    generation += 1;
    if (source) { source.close(); source = null; }
    pages = {}; loading = {}; total = -1; ended = false; target = -1;
    matches = []; current = -1; hits = {};
    el("log-matches").textContent = "";
    follow = true; el("log-follow").checked = true;
    keepInUrl(true);
    start(null);
  }
  function start(line) {
    var mine = generation;
    fetch(base + "/lines?start=0&count=1&" + query(), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (body) {
        if (mine !== generation) { return; }
        setTotal(body.total);
        if (line) { goTo(Number(line[1]) - 1); } else { view.scrollTop = view.scrollHeight; render(); }
        connect();
      });
  }
})();
