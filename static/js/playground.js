// Playground: send a turn, stream the adapter's and the base model's answers side by side (server-sent
// events), then highlight the spans traced to training records. All text is set with textContent: inert.
(function () {
  "use strict";
  const form = document.getElementById("chat-form");
  if (!form) return;
  const conversation = document.getElementById("conversation");
  const template = document.getElementById("turn-template");
  const send = document.getElementById("send");

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function highlight(target, text, attribution) {
    target.textContent = "";
    let at = 0;
    for (const span of (attribution && attribution.spans) || []) {
      if (span.start > at) target.append(text.slice(at, span.start));
      const mark = el("mark", text.slice(span.start, span.end), "attributed");
      mark.title = span.contributor + " · " + span.record.datanet + " record " + span.record.id;
      target.append(mark);
      at = span.end;
    }
    if (at < text.length) target.append(text.slice(at));
  }

  function showAttribution(box, attribution) {
    box.textContent = "";
    if (!attribution) return;
    if (attribution.spans.length) {
      const list = el("ul");
      for (const span of attribution.spans) {
        const item = el("li");
        const quote = span.text.length > 80 ? span.text.slice(0, 79) + "…" : span.text;
        item.append(el("mark", quote), " from ", el("strong", span.contributor, "contributor"),
          ", " + span.record.datanet + " record " + span.record.id + " ",
          el("code", span.record.content_hash.slice(0, 12)),
          span.occurrences > 1 ? " (" + span.occurrences + " occurrences)" : "");
        list.append(item);
      }
      box.append(list);
    }
    box.append(el("p", attribution.note, "muted note"));
  }

  // Until the first token: what the answer waits for (the worker, loading the model, the adapter) and for how long.
  function waiting(answer) {
    const box = answer.querySelector(".loading");
    const started = Date.now();
    const elapsed = box.querySelector(".loading-elapsed");
    const timer = setInterval(function () {
      elapsed.textContent = Math.round((Date.now() - started) / 1000) + " s";
    }, 1000);
    return {
      status: function (event) {
        box.querySelector(".loading-message").textContent = event.message + " (step " + event.step + " of " + event.steps + ")";
        const bar = box.querySelector(".loading-progress");
        bar.max = event.steps;
        if (event.step > 1) bar.value = event.step - 1; else bar.removeAttribute("value");
      },
      end: function () {
        clearInterval(timer);
        box.remove();
        answer.classList.remove("waiting");
      },
    };
  }

  function stream(url, answer) {
    return new Promise(function (resolve) {
      const text = answer.querySelector(".answer-text");
      const wait = waiting(answer);
      const source = new EventSource(url);
      source.addEventListener("status", function (e) { wait.status(JSON.parse(e.data)); });
      source.addEventListener("token", function (e) {
        wait.end();
        text.textContent += JSON.parse(e.data).text;
      });
      source.addEventListener("done", function (e) {
        wait.end();
        source.close();
        const event = JSON.parse(e.data);
        text.classList.remove("streaming");
        highlight(text, event.text, event.attribution);
        const box = answer.querySelector(".attribution");
        if (box) showAttribution(box, event.attribution);
        resolve();
      });
      source.addEventListener("error", function (e) {
        wait.end();
        source.close();
        text.classList.remove("streaming");
        let message = "The connection to the inference service was lost.";
        try { message = JSON.parse(e.data).message; } catch (ignored) { /* a network error has no data */ }
        answer.append(el("p", message, "error"));
        resolve();
      });
    });
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    send.disabled = true;
    try {
      const response = await fetch(window.location.pathname, {
        method: "POST", body: new FormData(form), headers: {"Accept": "application/json"}, credentials: "same-origin",
      });
      const body = await response.json();
      if (!response.ok) {
        const errors = Object.values(body.errors || {}).flat().map(function (e) { return e.message; });
        alert(errors.join("\n") || "The message could not be sent.");
        return;
      }
      const turn = template.content.firstElementChild.cloneNode(true);
      turn.querySelector(".user-text").textContent = form.elements.message.value;
      conversation.append(turn);
      form.elements.message.value = "";
      await Promise.all([
        stream(body.adapter, turn.querySelector('[data-side="adapter"]')),
        stream(body.base, turn.querySelector('[data-side="base"]')),
      ]);
    } finally {
      send.disabled = false;
    }
  });
})();
