// What templates ask for with data attributes, since the Content-Security-Policy allows
// no inline script or style attribute: bar widths, and selects that submit their form.
(function () {
  "use strict";
  // <span data-width="42.5">: a meter or share bar filled to that percent.
  document.querySelectorAll("[data-width]").forEach(function (bar) {
    bar.style.width = bar.dataset.width + "%";
  });
  // <select data-autosubmit>: choosing an option applies it at once.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      select.form.submit();
    });
  });
})();
