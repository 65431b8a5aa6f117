// Bytes and duration of a device's sessions over time (uPlot, vendored).
(function () {
  "use strict";
  function draw(el, data) {
    if (!window.uPlot || !data.t || data.t.length === 0) {
      el.textContent = "No sessions to chart yet.";
      return;
    }
    var width = Math.max(300, el.clientWidth || 600);
    // One session (or all within an hour): a day on each side of the time axis (uPlot
    // itself widens a single point to years).
    var lo = Math.min.apply(null, data.t), hi = Math.max.apply(null, data.t);
    var pad = function (u, min, max) {
      return hi - lo < 3600 ? [lo - 86400, hi + 86400] : [min, max];
    };
    var opts = {
      width: width, height: 240,
      scales: { x: { time: true, range: pad } },
      series: [
        {},
        { label: "bytes sent (MiB)", stroke: "#2f6fd6", scale: "mib", points: { show: true } },
        { label: "bytes processed (MiB)", stroke: "#2e9e44", scale: "mib", points: { show: true } },
        { label: "duration (s)", stroke: "#e8891c", scale: "s", points: { show: true } }
      ],
      axes: [{}, { scale: "mib", label: "MiB" }, { scale: "s", side: 1, label: "s",
                                                    grid: { show: false } }]
    };
    new window.uPlot(opts, [data.t, data.sent, data.processed, data.duration], el);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("session-chart");
    if (!el) { return; }
    fetch(el.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) { draw(el, data); })
      .catch(function () { el.textContent = "The chart could not be loaded."; });
  });
})();
