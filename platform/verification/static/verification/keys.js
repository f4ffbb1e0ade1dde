// Keyboard shortcuts on the verification page: y yes, n no, s not sure (one answer per page).
// A file, not an inline script: the Content-Security-Policy allows scripts from 'self' only.
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (event.target.closest("input, textarea, select")) return;
  var button = document.querySelector('.answers button[data-key="' + event.key.toLowerCase() + '"]');
  if (button && !button.form.dataset.sent) { button.form.dataset.sent = "1"; button.click(); }
});
