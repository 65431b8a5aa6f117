// Bytes and duration of a device's sessions over time (uPlot, vendored).
(function () {
  "use strict";
  function draw(el, data) {
    if (!window.uPlot || !data.t || data.t.length === 0) {
      el.textContent = "No sessions to chart yet.";
      return;
    }
    var width = Math.max(300, el.clientWidth || 600);
    // One session (or all at one time): give the time axis a day on each side.
    var pad = function (u, min, max) {
      return min === max ? [min - 86400, max + 86400] : [min, max];
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
