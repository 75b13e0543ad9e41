// Wizard, step 3: the empty advanced fields show the chosen preset's values (greyed), whichever preset is picked.
(function () {
  "use strict";
  const data = document.getElementById("preset-values");
  if (!data) return;
  const values = JSON.parse(data.textContent);

  function show(preset) {
    for (const [name, value] of Object.entries(values[preset] || {})) {
      const field = document.querySelector('[name="' + name + '"]');
      if (!field || value === null) continue;
      if (field.tagName === "SELECT") field.options[0].textContent = "the preset's (" + value + ")";
      else field.placeholder = String(value);
    }
  }

  document.querySelectorAll('input[name="preset"]').forEach(function (radio) {
    radio.addEventListener("change", function () { if (radio.checked) show(radio.value); });
  });
})();
