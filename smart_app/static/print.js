// The print view's one script: a Print button that prints this frame only (the browser's own
// Print command would print the whole EHR page around it). Without JavaScript the button stays hidden.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("print-button");
  if (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  }
});
