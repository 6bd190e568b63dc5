/* The review pages' only script (no inline script: the CSP forbids it): the face box on the still, zoom, and the
   keyboard shortcuts of the case page (j/k candidate, 1/2/3 label, n note, z zoom, s submit, e escalate, ? help). */
(function () {
  "use strict";

  function placeBox() {
    var img = document.getElementById("still-img");
    var box = document.getElementById("face-box");
    if (!img || !box) { return; }
    function place() {
      if (!img.naturalWidth || !img.naturalHeight) { return; }
      var d = box.dataset;
      box.style.left = (100 * parseFloat(d.x) / img.naturalWidth) + "%";
      box.style.top = (100 * parseFloat(d.y) / img.naturalHeight) + "%";
      box.style.width = (100 * parseFloat(d.w) / img.naturalWidth) + "%";
      box.style.height = (100 * parseFloat(d.h) / img.naturalHeight) + "%";
      box.hidden = false;
    }
    if (img.complete) { place(); } else { img.addEventListener("load", place); }
  }

  function toggleZoom() {
    var wrap = document.getElementById("still-wrap");
    var button = document.getElementById("zoom");
    if (!wrap) { return; }
    var on = wrap.classList.toggle("zoomed");
    if (button) { button.setAttribute("aria-pressed", on ? "true" : "false"); }
  }

  var current = -1;

  function candidates() { return Array.prototype.slice.call(document.querySelectorAll(".candidate")); }

  function select(index) {
    var all = candidates();
    if (!all.length) { return; }
    current = Math.max(0, Math.min(all.length - 1, index));
    all.forEach(function (el, i) { el.classList.toggle("current", i === current); });
    all[current].focus();
    all[current].scrollIntoView({ block: "nearest" });
  }

  function currentCandidate() {
    var all = candidates();
    if (current < 0 && all.length) { select(0); }
    return all[current];
  }

  function label(key) {
    var cand = currentCandidate();
    if (!cand) { return; }
    var radio = cand.querySelector('input[type="radio"][data-key="' + key + '"]');
    if (radio) { radio.checked = true; radio.dispatchEvent(new Event("change", { bubbles: true })); }
  }

  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" ||
      (target.tagName === "INPUT" && target.type !== "radio" && target.type !== "checkbox"));
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (typing(event.target)) {
      if (event.key === "Escape") { event.target.blur(); if (current >= 0) { select(current); } }
      return;
    }
    var form = document.getElementById("decision-form");
    var handled = true;
    switch (event.key) {
      case "j": select(current + 1); break;
      case "k": select(current - 1); break;
      case "1": case "2": case "3": label(event.key); break;
      case "n": {
        var cand = currentCandidate();
        var note = cand && cand.querySelector("textarea");
        if (note) { note.focus(); } else { handled = false; }
        break;
      }
      case "z": toggleZoom(); break;
      case "s": if (form) { form.requestSubmit(); } else { handled = false; } break;
      case "e": {
        var esc = document.getElementById("escalation_note");
        if (esc) { esc.focus(); } else { handled = false; }
        break;
      }
      case "?": {
        var help = document.getElementById("shortcuts");
        if (help) { help.open = !help.open; } else { handled = false; }
        break;
      }
      default: handled = false;
    }
    if (handled) { event.preventDefault(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    placeBox();
    var zoom = document.getElementById("zoom");
    if (zoom) { zoom.addEventListener("click", toggleZoom); }
    if (document.querySelector(".candidate")) { document.addEventListener("keydown", onKey); }
    candidates().forEach(function (el, i) {
      el.addEventListener("focusin", function () {
        current = i;
        candidates().forEach(function (other, j) { other.classList.toggle("current", j === i); });
      });
    });
  });
}());
