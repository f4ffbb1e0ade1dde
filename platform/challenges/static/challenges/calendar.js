// The calendar's project filter applies on change (a file, not an inline handler: the
// Content-Security-Policy allows no inline script).
document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
  select.addEventListener("change", function () { select.form.submit(); });
});
