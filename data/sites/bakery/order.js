// The order form never leaves the page: it is checked and confirmed right here.
const PRICES = { sourdough: 6.5, croissant: 2.8, cinnamon: 3.2, rye: 5.9 };
const NAMES = {
  sourdough: "country sourdough", croissant: "butter croissant",
  cinnamon: "cinnamon bun", rye: "seeded rye",
};

const form = document.getElementById("order-form");
const error = document.getElementById("order-error");
const done = document.getElementById("order-done");
const summary = document.getElementById("order-summary");

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const name = String(data.get("name") || "").trim() || "friend";
  const qty = Number(data.get("qty"));
  if (!Number.isInteger(qty) || qty < 1 || qty > 24) {
    error.textContent = "Please choose between 1 and 24 items.";
    error.hidden = false;
    return;
  }
  const item = String(data.get("item"));
  const total = (PRICES[item] * qty).toFixed(2);
  summary.textContent =
    `${name}, your ${qty} × ${NAMES[item]} (€${total}) will be ready at ${data.get("time")}.`;
  error.hidden = true;
  form.hidden = true;
  done.hidden = false;
});

document.getElementById("order-again").addEventListener("click", () => {
  form.reset();
  done.hidden = true;
  form.hidden = false;
});
