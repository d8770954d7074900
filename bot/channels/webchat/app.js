/* crmbot web chat page script: plain JS, no build step, no third-party code.
 *
 * Security: every text from the person or the bot is put on the page with textContent, never innerHTML;
 * images are shown only as data:image URLs (the page's Content-Security-Policy allows nothing else).
 * The history lives in sessionStorage (this tab only) and is re-rendered on reload; messages not yet
 * answered are re-sent with the same id after a reconnect, and the server answers each id once.
 */
(function () {
  "use strict";

  var STRINGS = {
    en: {
      title: "Customer service",
      welcome: "Hi! Ask me about your products, warranty and repairs — for example “my washing machine is leaking”.",
      placeholder: "Type a message…",
      send: "Send",
      attach: "Attach a photo or PDF",
      close: "Close chat",
      connecting: "Connecting…",
      reconnecting: "Connection lost. Reconnecting…",
      offline: "You are offline. Reconnecting when the network is back…",
      signedInAs: "Signed in as {name}",
      signOut: "Sign out",
      signedIn: "You are now signed in as {name} ({role}).",
      personasTitle: "Demo: try the assistant as one of these people",
      roles: { customer: "customer", rep: "sales rep", technician: "technician", manager: "manager", agent: "service agent" },
      tooBig: "That file is larger than 10 MB.",
      badType: "Only photos (PNG, JPEG, GIF, WebP) and PDF files can be sent.",
      uploadFailed: "The file could not be uploaded. Please try again.",
      tooMany: "Too many files at once — please wait a moment.",
      uploading: "Uploading {name}…",
      remove: "Remove",
      attachmentExpired: "An attached file had expired; please attach it again.",
      internal: "Sorry, something went wrong. Please try again.",
      signInFailed: "Could not sign in. Please reload the page.",
      blocked: "Your browser blocked this chat inside the page.",
      openWindow: "Open the chat in a new window",
      sessionChanged: "You signed in or out in another tab."
    },
    zh: {
      title: "客户服务",
      welcome: "您好！可以问我产品、保修和维修的问题，例如“我的洗衣机漏水了”。",
      placeholder: "输入消息…",
      send: "发送",
      attach: "添加照片或 PDF",
      close: "关闭聊天",
      connecting: "正在连接…",
      reconnecting: "连接已断开，正在重新连接…",
      offline: "网络已断开，恢复后将自动重新连接…",
      signedInAs: "已登录：{name}",
      signOut: "退出",
      signedIn: "您已登录为 {name}（{role}）。",
      personasTitle: "演示：选择一个身份来体验",
      roles: { customer: "客户", rep: "销售代表", technician: "技术员", manager: "经理", agent: "客服专员" },
      tooBig: "文件超过 10 MB。",
      badType: "只能发送照片（PNG、JPEG、GIF、WebP）和 PDF 文件。",
      uploadFailed: "文件上传失败，请重试。",
      tooMany: "文件太多，请稍后再试。",
      uploading: "正在上传 {name}…",
      remove: "移除",
      attachmentExpired: "附件已过期，请重新添加。",
      internal: "抱歉，出了点问题，请重试。",
      signInFailed: "登录失败，请刷新页面。",
      blocked: "您的浏览器阻止了嵌入页面中的聊天。",
      openWindow: "在新窗口中打开聊天",
      sessionChanged: "您已在另一个标签页中登录或退出。"
    }
  };
  var LANG = /^zh/i.test(navigator.language || "") ? "zh" : "en";
  var T = STRINGS[LANG];
  var STORE = "crmbot.webchat.v1";
  var RELOADED = "crmbot.webchat.reloaded";
  var MAX_HISTORY = 300;
  var MAX_UPLOAD = 10 * 1024 * 1024;
  var TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"];
  var EMBED = new URLSearchParams(location.search).get("embed") === "1";

  var el = {};
  var state = { history: [], pending: [], staged: [] };
  var ws = null;
  var ready = false;
  var attempt = 0;
  var timer = null;
  var connectedOnce = false;
  var signedIn = null;
  var switching = false;

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_m, key) { return values[key] == null ? "" : String(values[key]); });
  }

  function uuid() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 0x100).toString(16).slice(1); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  // --- storage ---------------------------------------------------------------------------------

  function load() {
    try {
      var saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
      if (saved && Array.isArray(saved.history) && Array.isArray(saved.pending)) {
        state.history = saved.history;
        state.pending = saved.pending;
      }
    } catch (e) { /* a broken entry starts a fresh history */ }
  }

  function save() {
    if (state.history.length > MAX_HISTORY) state.history = state.history.slice(-MAX_HISTORY);
    for (var tries = 0; tries < 50; tries++) {
      try {
        sessionStorage.setItem(STORE, JSON.stringify({ history: state.history, pending: state.pending }));
        return;
      } catch (e) {
        // Over the quota: images go first (oldest first), then the oldest messages.
        var withImage = state.history.find(function (item) { return item.image; });
        if (withImage) delete withImage.image;
        else if (state.history.length > 10) state.history = state.history.slice(Math.floor(state.history.length / 4));
        else return;
      }
    }
  }

  function clearHistory() {
    state.history = [];
    state.pending = [];
    state.staged = [];
    try { sessionStorage.removeItem(STORE); } catch (e) { /* storage disabled */ }
  }

  // --- rendering -------------------------------------------------------------------------------

  function node(tag, className, text) {
    var element = document.createElement(tag);
    if (className) element.className = className;
    if (text != null) element.textContent = text;
    return element;
  }

  function renderEntry(entry) {
    var wrap = node("div", "msg " + entry.role);
    if (entry.notice) wrap.classList.add("notice");
    if (entry.role === "user" && entry.id && isPending(entry.id)) wrap.classList.add("pending");
    if (entry.id) wrap.dataset.id = entry.id;
    if (entry.files && entry.files.length) {
      var files = node("div", "files");
      entry.files.forEach(function (name) { files.appendChild(node("span", "file", "\uD83D\uDCCE " + name)); });
      wrap.appendChild(files);
    }
    var text = entry.key ? (T[entry.key] ? fill(T[entry.key], entry.values || {}) : entry.key) : entry.text;
    if (text) wrap.appendChild(node("div", "bubble", text));
    if (entry.image && /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+$/.test(entry.image)) {
      var img = node("img", "image");
      img.src = entry.image;
      img.alt = entry.image_alt || "";
      img.addEventListener("load", scrollDown);
      wrap.appendChild(img);
    }
    if (entry.buttons && entry.buttons.length) {
      var row = node("div", "buttons");
      entry.buttons.forEach(function (button) {
        var b = node("button", null, button.title);
        b.type = "button";
        b.disabled = !!entry.used;
        b.addEventListener("click", function () {
          if (b.disabled) return;
          send(button.payload, button.title);
        });
        row.appendChild(b);
      });
      wrap.appendChild(row);
    }
    el.log.appendChild(wrap);
  }

  function renderAll() {
    el.log.textContent = "";
    renderEntry({ role: "bot", text: T.welcome });
    state.history.forEach(renderEntry);
    scrollDown();
  }

  function add(entry) {
    state.history.push(entry);
    save();
    renderEntry(entry);
    scrollDown();
  }

  function note(key, values) { add({ role: "note", key: key, values: values || {} }); }

  function scrollDown() { el.log.scrollTop = el.log.scrollHeight; }

  function isPending(id) { return state.pending.some(function (item) { return item.id === id; }); }

  function retireButtons() {
    // Once the person answers, older choices are history: they stay visible but no longer clickable.
    state.history.forEach(function (entry) { if (entry.buttons) entry.used = true; });
    Array.prototype.forEach.call(el.log.querySelectorAll(".buttons button"), function (b) { b.disabled = true; });
  }

  function setConnection(mode) {
    el.chat.dataset.connection = mode;
    if (mode === "open") {
      el.status.hidden = true;
      el.status.textContent = "";
    } else if (mode === "reconnecting") {
      el.status.hidden = false;
      el.status.textContent = navigator.onLine === false ? T.offline : T.reconnecting;
    } else {
      el.status.hidden = false;
      el.status.textContent = T.connecting;
    }
    updateTyping();
  }

  function updateTyping() {
    el.typing.hidden = !(ready && state.pending.length);
    if (!el.typing.hidden) scrollDown();
  }

  function renderWho() {
    el.who.textContent = signedIn ? fill(T.signedInAs, { name: signedIn.name }) : "";
    el.signout.hidden = !signedIn;
  }

  function renderPersonas(personas) {
    el.personaList.textContent = "";
    if (signedIn || !personas.length) {
      el.personas.hidden = true;
      return;
    }
    personas.forEach(function (persona) {
      var b = node("button", "persona");
      b.type = "button";
      b.dataset.username = persona.username;
      b.appendChild(node("span", null, persona.name));
      b.appendChild(node("small", null, T.roles[persona.role] || persona.role));
      b.addEventListener("click", function () { signInAs(persona); });
      el.personaList.appendChild(b);
    });
    el.personas.hidden = false;
  }

  function renderStaged() {
    el.staged.textContent = "";
    state.staged.forEach(function (file, index) {
      var chip = node("span", "chip");
      chip.appendChild(node("span", null, "\uD83D\uDCCE " + file.filename));
      if (!file.uploading) {
        var remove = node("button", null, "\u2715");
        remove.type = "button";
        remove.setAttribute("aria-label", T.remove);
        remove.addEventListener("click", function () { state.staged.splice(index, 1); renderStaged(); });
        chip.appendChild(remove);
      }
      el.staged.appendChild(chip);
    });
    el.staged.hidden = !state.staged.length;
  }

  // --- the socket ------------------------------------------------------------------------------

  function socketUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/webchat/ws";
  }

  function connect() {
    clearTimeout(timer);
    timer = null;
    ready = false;
    setConnection(connectedOnce ? "reconnecting" : "connecting");
    var socket;
    try {
      socket = new WebSocket(socketUrl());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = socket;
    socket.onmessage = function (event) {
      if (ws !== socket) return;
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      receive(frame);
    };
    socket.onclose = function () {
      if (ws !== socket) return;
      ws = null;
      ready = false;
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    setConnection("reconnecting");
    if (timer) return;
    // Exponential backoff with jitter, capped, so a restarted server is not hit by every tab at once.
    var delay = Math.min(10000, 400 * Math.pow(2, attempt)) * (0.75 + Math.random() * 0.5);
    attempt += 1;
    timer = setTimeout(probeThenConnect, delay);
  }

  function probeThenConnect() {
    timer = null;
    // A refused handshake looks like a network error to the page: ask whether the session still holds.
    fetch("/webchat/session", { cache: "no-store", credentials: "same-origin" }).then(function (response) {
      if (response.status === 401) return restartSession();
      connect();
    }, function () {
      scheduleReconnect();
    });
  }

  function restartSession() {
    // The session cookie is gone or was refused: reloading the page issues a new one (once a minute at
    // most). Inside another site's iframe the browser refuses the cookie itself: offer a new window.
    var last = 0;
    try { last = Number(sessionStorage.getItem(RELOADED) || 0); } catch (e) { last = Date.now(); }
    if (window.parent === window && Date.now() - last > 60000) {
      try { sessionStorage.setItem(RELOADED, String(Date.now())); } catch (e) { /* storage disabled */ }
      location.reload();
      return;
    }
    showBlocked();
  }

  function reconnectNow() {
    attempt = 0;
    if (ws) {
      var old = ws;
      ws = null;
      old.close();
    }
    connect();
  }

  function transmit(item) {
    if (!ws || !ready) return;
    ws.send(JSON.stringify({ type: "message", id: item.id, text: item.text, attachments: item.attachments || [] }));
  }

  function receive(frame) {
    switch (frame.type) {
      case "ready":
        ready = true;
        attempt = 0;
        connectedOnce = true;
        setConnection("open");
        state.pending.forEach(transmit);
        break;
      case "typing":
        updateTyping();
        break;
      case "reply":
        var seen = state.history.some(function (entry) {
          return entry.role === "bot" && entry.replyTo === frame.id && entry.seq === frame.seq;
        });
        if (frame.replay && seen) break;
        add({
          role: "bot", replyTo: frame.id, seq: frame.seq, text: String(frame.text || ""),
          buttons: Array.isArray(frame.buttons) ? frame.buttons : [], image: frame.image, image_alt: frame.image_alt
        });
        break;
      case "done":
        state.pending = state.pending.filter(function (item) { return item.id !== frame.id; });
        save();
        var bubble = el.log.querySelector('.msg.user[data-id="' + String(frame.id).replace(/[^A-Za-z0-9-]/g, "") + '"]');
        if (bubble) bubble.classList.remove("pending");
        updateTyping();
        if (!signedIn) loadSession();
        break;
      case "notification":
        add({
          role: "bot", notice: true, text: String(frame.text || ""),
          buttons: Array.isArray(frame.buttons) ? frame.buttons : [], image: frame.image, image_alt: frame.image_alt
        });
        break;
      case "error":
        if (frame.code === "attachment_expired") note("attachmentExpired");
        else if (frame.code === "internal") note("internal");
        break;
      case "session_changed":
        if (switching) break;
        clearHistory();
        location.reload();
        break;
      default:
        break;
    }
  }

  // --- actions ---------------------------------------------------------------------------------

  function send(text, shown) {
    var files = state.staged.filter(function (file) { return !file.uploading; });
    if (!text && !files.length) return;
    var item = { id: uuid(), text: text, attachments: files.map(function (file) { return file.id; }) };
    state.staged = state.staged.filter(function (file) { return file.uploading; });
    renderStaged();
    retireButtons();
    state.pending.push(item);
    add({ role: "user", id: item.id, text: shown != null ? shown : text, files: files.map(function (f) { return f.filename; }) });
    transmit(item);
    updateTyping();
  }

  function submit(event) {
    if (event) event.preventDefault();
    var text = el.input.value.trim();
    if (!text && !state.staged.length) return;
    el.input.value = "";
    grow();
    send(text);
    el.input.focus();
  }

  function grow() {
    el.input.style.height = "auto";
    el.input.style.height = Math.min(el.input.scrollHeight, 120) + "px";
  }

  function upload(file) {
    if (file.size > MAX_UPLOAD) return note("tooBig");
    if (TYPES.indexOf(file.type) < 0) return note("badType");
    var staged = { filename: file.name, uploading: true };
    state.staged.push(staged);
    renderStaged();
    fetch("/webchat/upload", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": file.type, "X-Filename": encodeURIComponent(file.name) },
      body: file
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        state.staged.splice(state.staged.indexOf(staged), 1);
        if (response.ok) {
          state.staged.push({ id: body.id, filename: body.filename });
        } else if (response.status === 413) note("tooBig");
        else if (response.status === 415) note("badType");
        else if (response.status === 429) note("tooMany");
        else note("uploadFailed");
        renderStaged();
      });
    }, function () {
      state.staged.splice(state.staged.indexOf(staged), 1);
      renderStaged();
      note("uploadFailed");
    });
  }

  function loadSession() {
    return fetch("/webchat/session", { cache: "no-store", credentials: "same-origin" }).then(function (response) {
      if (response.status === 401) return "blocked";
      return response.json().then(function (body) {
        signedIn = body.signed_in || null;
        renderWho();
        renderPersonas(Array.isArray(body.personas) ? body.personas : []);
        return "ok";
      });
    }, function () { return "offline"; });
  }

  function signInAs(persona) {
    switching = true;
    fetch("/webchat/demo/signin", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: persona.username })
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(String(response.status));
        // A new person: the previous conversation is not theirs.
        clearHistory();
        renderAll();
        renderStaged();
        signedIn = body.signed_in;
        renderWho();
        el.personas.hidden = true;
        note("signedIn", { name: signedIn.name, role: T.roles[signedIn.role] || signedIn.role });
        reconnectNow();
      });
    }).catch(function () {
      note("signInFailed");
    }).then(function () {
      setTimeout(function () { switching = false; }, 1000);
    });
  }

  function signOut() {
    switching = true;
    fetch("/webchat/signout", { method: "POST", credentials: "same-origin" }).then(function () {
      clearHistory();
      location.reload();
    }, function () { switching = false; });
  }

  function showBlocked() {
    el.blocked.hidden = false;
    el.composer.hidden = true;
    el.status.hidden = true;
  }

  // --- start -----------------------------------------------------------------------------------

  function start() {
    [
      ["chat", "chat"], ["log", "log"], ["status", "status"], ["typing", "typing"], ["staged", "staged"],
      ["composer", "composer"], ["input", "input"], ["send", "send"], ["attach", "attach"], ["file", "file"],
      ["who", "who"], ["signout", "signout"], ["close", "close"], ["title", "title"], ["personas", "personas"],
      ["personaList", "persona-list"], ["personasTitle", "personas-title"], ["blocked", "blocked"],
      ["blockedText", "blocked-text"], ["blockedLink", "blocked-link"]
    ].forEach(function (pair) { el[pair[0]] = document.getElementById(pair[1]); });

    document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
    document.title = T.title;
    el.title.textContent = T.title;
    el.input.placeholder = T.placeholder;
    el.send.setAttribute("aria-label", T.send);
    el.attach.setAttribute("aria-label", T.attach);
    el.attach.title = T.attach;
    el.close.setAttribute("aria-label", T.close);
    el.signout.textContent = T.signOut;
    el.personasTitle.textContent = T.personasTitle;
    el.blockedText.textContent = T.blocked;
    el.blockedLink.textContent = T.openWindow;
    el.close.hidden = !(EMBED && window.parent !== window);

    load();
    renderAll();
    renderStaged();

    el.composer.addEventListener("submit", submit);
    el.input.addEventListener("input", grow);
    el.input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) submit(event);
    });
    el.attach.addEventListener("click", function () { el.file.click(); });
    el.file.addEventListener("change", function () {
      var file = el.file.files && el.file.files[0];
      el.file.value = "";
      if (file) upload(file);
    });
    el.signout.addEventListener("click", signOut);
    el.close.addEventListener("click", function () {
      window.parent.postMessage({ type: "crmbot-webchat-close" }, "*");
    });
    window.addEventListener("online", function () { if (!ready) reconnectNow(); });
    window.addEventListener("offline", function () { if (!ready) setConnection("reconnecting"); });
    // Keeps idle connections alive through proxies that drop quiet sockets.
    setInterval(function () { if (ws && ready) ws.send(JSON.stringify({ type: "ping" })); }, 25000);

    setConnection("connecting");
    loadSession().then(function (result) {
      if (result === "blocked") return restartSession();
      try { sessionStorage.removeItem(RELOADED); } catch (e) { /* storage disabled */ }
      connect();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
