// Reads a regatta date that does not exist: logs an error and leaves "loading..." in place.
const regattas = [];
if (regattas.length === 0) {
  console.error("club.js: no regatta dates configured");
} else {
  document.getElementById("next-regatta").textContent = regattas[0];
}
