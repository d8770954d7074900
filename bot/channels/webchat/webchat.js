/* crmbot web chat — embed snippet for a company site. Add this one line to any page:
 *
 *     <script src="https://HOST/webchat.js" async></script>
 *
 * (HOST is where crmbot runs, e.g. chat.example.com.) It adds a floating chat button in the bottom
 * right corner; the button opens the chat (https://HOST/?embed=1) in an iframe: a panel on desktops,
 * full screen on phones. The chat keeps its session in a cookie of HOST, so serve it from the same
 * site as the company pages (chat.example.com beside www.example.com): browsers do not give cookies to
 * an iframe from another site, and the chat then offers to open in a new window instead.
 * Nothing here reads or changes the host page beyond adding the button and the iframe.
 */
(function () {
  "use strict";
  if (window.__crmbotWebchat) return; // the snippet pasted twice adds one button
  window.__crmbotWebchat = true;

  var script = document.currentScript;
  var origin = script && script.src ? new URL(script.src, location.href).origin : location.origin;
  var zh = /^zh/i.test(navigator.language || "");
  var label = zh ? "在线客服" : "Chat with us";
  var open = false;
  var frame = null;

  function style(element, rules) {
    Object.keys(rules).forEach(function (key) { element.style[key] = rules[key]; });
  }

  var button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-label", label);
  button.title = label;
  style(button, {
    position: "fixed", right: "20px", bottom: "20px", width: "58px", height: "58px", borderRadius: "50%",
    border: "0", background: "#1f6feb", color: "#fff", cursor: "pointer", zIndex: "2147483646",
    boxShadow: "0 4px 14px rgba(0,0,0,0.25)", display: "flex", alignItems: "center", justifyContent: "center",
    padding: "0"
  });
  var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "28");
  svg.setAttribute("height", "28");
  svg.setAttribute("aria-hidden", "true");
  var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("fill", "#fff");
  path.setAttribute("d", "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z");
  svg.appendChild(path);
  button.appendChild(svg);

  function place() {
    if (!frame) return;
    var phone = window.matchMedia("(max-width: 600px)").matches;
    style(frame, phone
      ? { right: "0", bottom: "0", width: "100%", height: "100%", borderRadius: "0" }
      : { right: "20px", bottom: "90px", width: "380px", height: "min(620px, calc(100vh - 110px))", borderRadius: "14px" });
  }

  function toggle(show) {
    open = show;
    if (show && !frame) {
      frame = document.createElement("iframe");
      frame.src = origin + "/?embed=1";
      frame.title = label;
      frame.setAttribute("allow", "clipboard-write");
      style(frame, {
        position: "fixed", border: "0", zIndex: "2147483647", background: "#fff",
        boxShadow: "0 8px 30px rgba(0,0,0,0.3)"
      });
      place();
      document.body.appendChild(frame);
    }
    if (frame) frame.style.display = show ? "block" : "none";
    button.setAttribute("aria-expanded", String(show));
  }

  button.addEventListener("click", function () { toggle(!open); });
  window.addEventListener("resize", place);
  window.addEventListener("message", function (event) {
    // Only the chat's own frame may close it.
    if (event.origin === origin && event.data && event.data.type === "crmbot-webchat-close") toggle(false);
  });

  function mount() { document.body.appendChild(button); }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
