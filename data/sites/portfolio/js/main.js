// Show or hide the "How I work" section.
const toggle = document.getElementById("more-toggle");
const more = document.getElementById("more");
toggle.addEventListener("click", () => {
  const open = more.hidden;
  more.hidden = !open;
  toggle.setAttribute("aria-expanded", String(open));
  toggle.textContent = open ? "Less about me" : "More about me";
});
