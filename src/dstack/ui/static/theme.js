// Before the page is drawn: the reader's theme (light or dark), if they chose one; without
// a choice the system's (prefers-color-scheme) holds.
"use strict";
(function () {
  try {
    var theme = window.localStorage.getItem("dstack.theme");
    if (theme === "light" || theme === "dark") {
      document.documentElement.setAttribute("data-theme", theme);
    }
  } catch (e) { /* storage disabled: the system's theme */ }
})();
