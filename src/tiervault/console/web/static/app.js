// tiervault console: page behaviour. Loaded as a file: the CSP forbids inline scripts.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // htmx requests carry the CSRF token as a header (forms also carry it as a field).
  document.addEventListener("htmx:configRequest", function (evt) {
    evt.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  // The table refreshes itself every 30 s, but not while devices are ticked for a command.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail && evt.detail.elt;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-autorefresh") &&
        document.querySelector('input[type=checkbox][name="device"]:checked')) {
      evt.preventDefault();
    }
  });

  // "select all" boxes: <input type=checkbox data-select-all="NAME"> toggles inputs named NAME.
  document.addEventListener("change", function (evt) {
    var box = evt.target;
    if (!box || !box.getAttribute || !box.hasAttribute("data-select-all")) { return; }
    var name = box.getAttribute("data-select-all");
    var boxes = document.querySelectorAll('input[type=checkbox][name="' + name + '"]');
    for (var i = 0; i < boxes.length; i++) { boxes[i].checked = box.checked; }
  });

  // The command form shows the fields of the chosen type only.
  function showParams(select) {
    var chosen = select.value;
    var groups = document.querySelectorAll("[data-params-for]");
    for (var i = 0; i < groups.length; i++) {
      var g = groups[i];
      var on = g.getAttribute("data-params-for").split(" ").indexOf(chosen) >= 0;
      g.classList.toggle("hidden", !on);
      var inputs = g.querySelectorAll("input, select, textarea");
      for (var j = 0; j < inputs.length; j++) { inputs[j].disabled = !on; }
    }
  }
  document.addEventListener("change", function (evt) {
    if (evt.target && evt.target.id === "command-type") { showParams(evt.target); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    var sel = document.getElementById("command-type");
    if (sel) { showParams(sel); }
  });
  // Commands sent from the dashboard take the devices ticked in the table.
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (!form || form.id !== "bulk-command") { return; }
    var old = form.querySelectorAll("input[data-copied]");
    for (var i = 0; i < old.length; i++) { old[i].remove(); }
    var ticked = document.querySelectorAll('input[type=checkbox][name="device"]:checked');
    if (ticked.length === 0) { evt.preventDefault(); alert("Tick at least one device."); return; }
    for (var k = 0; k < ticked.length; k++) {
      var h = document.createElement("input");
      h.type = "hidden"; h.name = "device"; h.value = ticked[k].value;
      h.setAttribute("data-copied", "1");
      form.appendChild(h);
    }
  });
})();
