// One week of readings from greenhouse 3 (a fixed sample, so every render is the same).
window.GREENHOUSE = {
  name: "Greenhouse 3",
  updated: "Sunday 06:00",
  days: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
  series: {
    temperature: { label: "Temperature", unit: "°C", color: "#e0703a",
                   values: [21.4, 22.1, 23.8, 24.6, 23.2, 22.0, 21.7], target: [20, 25] },
    humidity:    { label: "Humidity", unit: "%", color: "#3a86c8",
                   values: [64, 61, 58, 55, 59, 63, 66], target: [55, 70] },
    co2:         { label: "CO₂", unit: "ppm", color: "#5a9e6f",
                   values: [820, 860, 910, 980, 940, 880, 850], target: [700, 1000] },
  },
  alerts: [
    { day: "Thu", text: "Vent 2 opened late (12 min)", level: "warn" },
    { day: "Sat", text: "Irrigation line B pressure back to normal", level: "ok" },
  ],
};
