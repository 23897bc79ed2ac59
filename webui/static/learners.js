/* The Learners screen: the print button, and the address set back to the
   plain screen once cards are shown, so that a reload does not send the form again. */
document.addEventListener("DOMContentLoaded", function () {
  var cards = document.getElementById("cards");
  if (!cards) return;
  var button = document.getElementById("print-cards");
  if (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  }
  if (window.history && window.history.replaceState) {
    window.history.replaceState(null, "", cards.ownerDocument.location.pathname.replace(/\/(add|password)$/, ""));
  }
});
