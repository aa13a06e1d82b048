// What templates ask for with data attributes, since the Content-Security-Policy allows
// no inline script or style attribute: bar widths, and selects that submit their form.
(function () {
  "use strict";
  // <span data-width="42.5">: a meter or share bar filled to that percent.
  document.querySelectorAll("[data-width]").forEach(function (bar) {
    bar.style.width = bar.dataset.width + "%";
  });
  // A table wider than its card scrolls: keyboard users reach it with Tab and scroll
  // it with the arrow keys (WCAG 2.1.1).
  document.querySelectorAll(".table-wrap, .card").forEach(function (wrap) {
    if (wrap.scrollWidth > wrap.clientWidth) {
      wrap.tabIndex = 0;
    }
  });
  // <form data-confirm="…">: what cannot be undone asks first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  });
  // <select data-autosubmit>: choosing an option applies it at once.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      select.form.submit();
    });
  });
})();
