/**
 * hornbeam.js — the channels client for Hornbeam servers (no build step, no dependencies).
 *
 * Speaks the channel protocol: JSON text frames [join_ref, ref, topic, event, payload] with
 * Hornbeam's event names (hb_join, hb_leave, hb_reply, hb_error, hb_close; heartbeat on topic
 * "hornbeam"). Offers Hornbeam.Socket, Hornbeam.Channel, Hornbeam.Push and Hornbeam.Presence.
 *
 *   const socket = new Hornbeam.Socket("/ws", {params: {token: "t"}});
 *   const channel = socket.channel("room:lobby", {username: "ada"});
 *   const presence = new Hornbeam.Presence(channel);
 *   presence.onSync(() => render(presence.list((key, {metas}) => metas[0])));
 *   channel.on("new_msg", (msg) => show(msg));
 *   channel.join().receive("ok", (resp) => {}).receive("error", ({reason}) => {});
 *   socket.connect();
 *
 * The socket sends a heartbeat every heartbeatIntervalMs; a heartbeat left unanswered until the
 * next one, or any close it did not ask for, makes it reconnect with backoff (reconnectAfterMs)
 * and rejoin its channels. Works in browsers and in Node (pass `transport: require("ws")`).
 */
(function (root) {
  "use strict";

  const DEFAULT_TIMEOUT = 10000;
  const DEFAULT_HEARTBEAT_INTERVAL = 30000;
  const WS_CLOSE_NORMAL = 1000;
  const CONTROL_TOPIC = "hornbeam";
  const EVENTS = {
    join: "hb_join",
    leave: "hb_leave",
    reply: "hb_reply",
    error: "hb_error",
    close: "hb_close",
  };
  const LIFECYCLE = [EVENTS.join, EVENTS.leave, EVENTS.reply, EVENTS.error, EVENTS.close];
  const STATES = {closed: "closed", errored: "errored", joined: "joined", joining: "joining",
                  leaving: "leaving"};

  const backoff = (steps) => (tries) => steps[tries - 1] || steps[steps.length - 1];
  const closure = (value) => (typeof value === "function" ? value : () => value);

  /** A timer whose delay grows with each try (reset on success). */
  class Timer {
    constructor(callback, timerCalc) {
      this.callback = callback;
      this.timerCalc = timerCalc;
      this.timer = null;
      this.tries = 0;
    }
    reset() {
      this.tries = 0;
      clearTimeout(this.timer);
      this.timer = null;
    }
    scheduleTimeout() {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => {
        this.tries += 1;
        this.callback();
      }, this.timerCalc(this.tries + 1));
    }
  }

  /** One message sent to the server, waiting for its reply. */
  class Push {
    constructor(channel, event, payload, timeout) {
      this.channel = channel;
      this.event = event;
      this.payload = closure(payload || {});
      this.timeout = timeout;
      this.receivedResp = null;
      this.recHooks = [];
      this.sent = false;
      this.ref = null;
      this.refEvent = null;
      this.timeoutTimer = null;
    }
    resend(timeout) {
      this.timeout = timeout;
      this.reset();
      this.send();
    }
    send() {
      if (this.hasReceived("timeout")) return;
      this.startTimeout();
      this.sent = true;
      this.channel.socket.push({
        topic: this.channel.topic,
        event: this.event,
        payload: this.payload(),
        ref: this.ref,
        join_ref: this.channel.joinRef(),
      });
    }
    /** Calls callback(response) when the reply has this status ("ok", "error", "timeout"). */
    receive(status, callback) {
      if (this.hasReceived(status)) callback(this.receivedResp.response);
      this.recHooks.push({status, callback});
      return this;
    }
    reset() {
      this.cancelRefEvent();
      this.ref = null;
      this.refEvent = null;
      this.receivedResp = null;
      this.sent = false;
    }
    matchReceive({status, response}) {
      this.recHooks.filter((h) => h.status === status).forEach((h) => h.callback(response));
    }
    cancelRefEvent() {
      if (this.refEvent) this.channel.off(this.refEvent);
    }
    cancelTimeout() {
      clearTimeout(this.timeoutTimer);
      this.timeoutTimer = null;
    }
    startTimeout() {
      if (this.timeoutTimer) this.cancelTimeout();
      this.ref = this.channel.socket.makeRef();
      this.refEvent = this.channel.replyEventName(this.ref);
      this.channel.on(this.refEvent, (payload) => {
        this.cancelRefEvent();
        this.cancelTimeout();
        this.receivedResp = payload;
        this.matchReceive(payload);
      });
      this.timeoutTimer = setTimeout(() => this.trigger("timeout", {}), this.timeout);
    }
    hasReceived(status) {
      return !!(this.receivedResp && this.receivedResp.status === status);
    }
    trigger(status, response) {
      this.channel.trigger(this.refEvent, {status, response});
    }
  }

  /** One topic joined over the socket. */
  class Channel {
    constructor(topic, params, socket) {
      this.state = STATES.closed;
      this.topic = topic;
      this.params = closure(params || {});
      this.socket = socket;
      this.bindings = [];
      this.bindingRef = 0;
      this.timeout = socket.timeout;
      this.joinedOnce = false;
      this.joinPush = new Push(this, EVENTS.join, this.params, this.timeout);
      this.pushBuffer = [];
      this.stateChangeRefs = [];
      this.rejoinTimer = new Timer(() => {
        if (this.socket.isConnected()) this.rejoin();
      }, socket.rejoinAfterMs);
      this.stateChangeRefs.push(socket.onError(() => this.rejoinTimer.reset()));
      this.stateChangeRefs.push(socket.onOpen(() => {
        this.rejoinTimer.reset();
        if (this.isErrored()) this.rejoin();
      }));
      this.joinPush.receive("ok", () => {
        this.state = STATES.joined;
        this.rejoinTimer.reset();
        this.pushBuffer.forEach((p) => p.send());
        this.pushBuffer = [];
      });
      this.joinPush.receive("error", () => {
        this.state = STATES.errored;
        if (this.socket.isConnected()) this.rejoinTimer.scheduleTimeout();
      });
      this.joinPush.receive("timeout", () => {
        this.socket.log("channel", `timeout ${this.topic} (${this.joinRef()})`);
        new Push(this, EVENTS.leave, {}, this.timeout).send();
        this.state = STATES.errored;
        this.joinPush.reset();
        if (this.socket.isConnected()) this.rejoinTimer.scheduleTimeout();
      });
      this.onClose(() => {
        this.rejoinTimer.reset();
        this.socket.log("channel", `close ${this.topic} ${this.joinRef()}`);
        this.state = STATES.closed;
        this.socket.remove(this);
      });
      this.onError((reason) => {
        this.socket.log("channel", `error ${this.topic}`, reason);
        if (this.isJoining()) this.joinPush.reset();
        this.state = STATES.errored;
        if (this.socket.isConnected()) this.rejoinTimer.scheduleTimeout();
      });
      this.on(EVENTS.reply, (payload, ref) => this.trigger(this.replyEventName(ref), payload));
    }

    /** Joins the topic; returns the join Push. Call once per channel. */
    join(timeout) {
      if (this.joinedOnce) {
        throw new Error("tried to join multiple times: join() can only be called once per channel");
      }
      this.timeout = timeout || this.timeout;
      this.joinedOnce = true;
      this.rejoin();
      return this.joinPush;
    }
    onClose(callback) {
      return this.on(EVENTS.close, callback);
    }
    onError(callback) {
      return this.on(EVENTS.error, (reason) => callback(reason));
    }
    /** Calls callback(payload, ref, joinRef) for each event of this name; returns a ref for off(). */
    on(event, callback) {
      const ref = this.bindingRef++;
      this.bindings.push({event, ref, callback});
      return ref;
    }
    off(event, ref) {
      this.bindings = this.bindings.filter(
        (b) => !(b.event === event && (typeof ref === "undefined" || ref === b.ref)));
    }
    canPush() {
      return this.socket.isConnected() && this.isJoined();
    }
    /** Sends an event; returns a Push to hang receive("ok"|"error"|"timeout") callbacks on. */
    push(event, payload, timeout) {
      if (!this.joinedOnce) {
        throw new Error(`tried to push "${event}" to "${this.topic}" before joining`);
      }
      const pushEvent = new Push(this, event, () => payload || {}, timeout || this.timeout);
      if (this.canPush()) {
        pushEvent.send();
      } else {
        pushEvent.startTimeout();
        this.pushBuffer.push(pushEvent);
      }
      return pushEvent;
    }
    /** Leaves the topic; the channel closes when the server answers (or on timeout). */
    leave(timeout) {
      this.rejoinTimer.reset();
      this.joinPush.cancelTimeout();
      this.state = STATES.leaving;
      const onClose = () => {
        this.socket.log("channel", `leave ${this.topic}`);
        this.trigger(EVENTS.close, "leave");
      };
      const leavePush = new Push(this, EVENTS.leave, {}, timeout || this.timeout);
      leavePush.receive("ok", onClose).receive("timeout", onClose);
      leavePush.send();
      if (!this.canPush()) leavePush.trigger("ok", {});
      return leavePush;
    }
    /** Hook to transform incoming payloads; must return the payload. */
    onMessage(_event, payload) {
      return payload;
    }
    isMember(topic, event, payload, joinRef) {
      if (this.topic !== topic) return false;
      if (joinRef && joinRef !== this.joinRef()) {
        this.socket.log("channel", "dropping outdated message", {topic, event, payload, joinRef});
        return false;
      }
      return true;
    }
    joinRef() {
      return this.joinPush.ref;
    }
    rejoin(timeout) {
      if (this.isLeaving()) return;
      this.socket.leaveOpenTopic(this.topic);
      this.state = STATES.joining;
      this.joinPush.resend(timeout || this.timeout);
    }
    trigger(event, payload, ref, joinRef) {
      const handled = this.onMessage(event, payload, ref, joinRef);
      if (payload && !handled) {
        throw new Error("channel onMessage callbacks must return the payload");
      }
      const matching = this.bindings.filter((b) => b.event === event);
      for (const b of matching) b.callback(handled, ref, joinRef || this.joinRef());
    }
    replyEventName(ref) {
      return `chan_reply_${ref}`;
    }
    isClosed() { return this.state === STATES.closed; }
    isErrored() { return this.state === STATES.errored; }
    isJoined() { return this.state === STATES.joined; }
    isJoining() { return this.state === STATES.joining; }
    isLeaving() { return this.state === STATES.leaving; }
  }

  /** The connection: heartbeats, reconnects, and the channels joined over it. */
  class Socket {
    constructor(endPoint, opts = {}) {
      this.stateChangeCallbacks = {open: [], close: [], error: [], message: []};
      this.channels = [];
      this.sendBuffer = [];
      this.ref = 0;
      this.timeout = opts.timeout || DEFAULT_TIMEOUT;
      this.transport = opts.transport || root.WebSocket;
      this.heartbeatIntervalMs = opts.heartbeatIntervalMs || DEFAULT_HEARTBEAT_INTERVAL;
      this.reconnectAfterMs = opts.reconnectAfterMs || backoff([10, 50, 100, 150, 200, 250, 500,
                                                                1000, 2000, 5000]);
      this.rejoinAfterMs = opts.rejoinAfterMs || backoff([1000, 2000, 5000, 10000]);
      this.logger = opts.logger || null;
      this.params = closure(opts.params || {});
      this.endPoint = `${endPoint.replace(/\/+$/, "")}/websocket`;
      this.heartbeatTimer = null;
      this.pendingHeartbeatRef = null;
      this.closeWasClean = false;
      this.conn = null;
      this.reconnectTimer = new Timer(() => this.teardown(() => this.connect()),
                                      this.reconnectAfterMs);
    }

    /** The WebSocket URL: the end point made absolute, plus the params as the query. */
    endPointURL() {
      let url = this.endPoint;
      const loc = root.location;
      if (loc && !/^wss?:\/\//i.test(url)) {
        const abs = new URL(url, loc.href);
        abs.protocol = abs.protocol === "https:" ? "wss:" : "ws:";
        url = abs.toString();
      } else if (/^https?:\/\//i.test(url)) {
        url = url.replace(/^http/i, "ws");
      }
      const params = this.params();
      const query = Object.keys(params)
        .map((k) => `${encodeURIComponent(k)}=${encodeURIComponent(params[k])}`).join("&");
      if (!query) return url;
      return `${url}${url.indexOf("?") >= 0 ? "&" : "?"}${query}`;
    }

    log(kind, msg, data) {
      if (this.logger) this.logger(kind, msg, data);
    }
    hasLogger() {
      return this.logger !== null;
    }

    connect() {
      if (this.conn) return;
      this.closeWasClean = false;
      const conn = new this.transport(this.endPointURL());
      this.conn = conn;
      conn.binaryType = "arraybuffer";
      conn.onopen = () => this.onConnOpen();
      conn.onerror = (error) => this.onConnError(error);
      conn.onmessage = (event) => this.onConnMessage(event);
      conn.onclose = (event) => this.onConnClose(event);
    }

    /** Closes the connection for good (no reconnect) and calls callback once closed. */
    disconnect(callback, code, reason) {
      this.closeWasClean = true;
      this.reconnectTimer.reset();
      this.teardown(callback, code, reason);
    }

    teardown(callback, code, reason) {
      const conn = this.conn;
      this.conn = null;
      clearTimeout(this.heartbeatTimer);
      this.heartbeatTimer = null;
      this.pendingHeartbeatRef = null;
      if (conn) {
        conn.onopen = conn.onerror = conn.onmessage = conn.onclose = () => {};
        try {
          conn.close(code || WS_CLOSE_NORMAL, reason || "");
        } catch (e) {
          conn.close();
        }
        this.triggerChanError();
        this.stateChangeCallbacks.close.forEach(([, cb]) => cb({code: code || WS_CLOSE_NORMAL,
                                                               reason: reason || ""}));
      }
      if (callback) callback();
    }

    onOpen(callback) { return this.onStateChange("open", callback); }
    onClose(callback) { return this.onStateChange("close", callback); }
    onError(callback) { return this.onStateChange("error", callback); }
    onMessage(callback) { return this.onStateChange("message", callback); }
    onStateChange(kind, callback) {
      const ref = this.makeRef();
      this.stateChangeCallbacks[kind].push([ref, callback]);
      return ref;
    }
    off(refs) {
      for (const kind of Object.keys(this.stateChangeCallbacks)) {
        this.stateChangeCallbacks[kind] =
          this.stateChangeCallbacks[kind].filter(([ref]) => refs.indexOf(ref) === -1);
      }
    }

    onConnOpen() {
      this.log("transport", `connected to ${this.endPointURL()}`);
      this.closeWasClean = false;
      this.flushSendBuffer();
      this.reconnectTimer.reset();
      this.resetHeartbeat();
      this.stateChangeCallbacks.open.forEach(([, cb]) => cb());
    }

    onConnClose(event) {
      this.log("transport", "close", event);
      this.conn = null;
      this.triggerChanError();
      clearTimeout(this.heartbeatTimer);
      this.heartbeatTimer = null;
      this.pendingHeartbeatRef = null;
      if (!this.closeWasClean) this.reconnectTimer.scheduleTimeout();
      this.stateChangeCallbacks.close.forEach(([, cb]) => cb(event));
    }

    onConnError(error) {
      this.log("transport", "error", error);
      this.triggerChanError();
      this.stateChangeCallbacks.error.forEach(([, cb]) => cb(error));
    }

    triggerChanError() {
      this.channels.forEach((channel) => {
        if (!(channel.isErrored() || channel.isLeaving() || channel.isClosed())) {
          channel.trigger(EVENTS.error);
        }
      });
    }

    connectionState() {
      switch (this.conn && this.conn.readyState) {
        case 0: return "connecting";
        case 1: return "open";
        case 2: return "closing";
        default: return "closed";
      }
    }
    isConnected() {
      return this.connectionState() === "open";
    }

    remove(channel) {
      this.off(channel.stateChangeRefs);
      this.channels = this.channels.filter((c) => c !== channel);
    }

    /** A channel for topic; join it with channel.join(). */
    channel(topic, chanParams = {}) {
      const chan = new Channel(topic, chanParams, this);
      this.channels.push(chan);
      return chan;
    }

    push(data) {
      const {topic, event, payload, ref, join_ref} = data;
      this.log("push", `${topic} ${event} (${join_ref}, ${ref})`, payload);
      const send = () => this.conn.send(JSON.stringify([join_ref, ref, topic, event, payload]));
      if (this.isConnected()) send();
      else this.sendBuffer.push(send);
    }

    makeRef() {
      this.ref = this.ref >= Number.MAX_SAFE_INTEGER ? 1 : this.ref + 1;
      return this.ref.toString();
    }

    leaveOpenTopic(topic) {
      const dup = this.channels.find((c) => c.topic === topic && (c.isJoined() || c.isJoining()));
      if (dup) {
        this.log("transport", `leaving duplicate topic "${topic}"`);
        dup.leave();
      }
    }

    onConnMessage(rawMessage) {
      let msg;
      try {
        msg = JSON.parse(rawMessage.data);
      } catch (e) {
        this.log("transport", "unreadable frame", rawMessage.data);
        return;
      }
      if (!Array.isArray(msg) || msg.length !== 5) {
        this.log("transport", "unexpected frame", msg);
        return;
      }
      const [join_ref, ref, topic, event, payload] = msg;
      if (ref && ref === this.pendingHeartbeatRef) {
        this.pendingHeartbeatRef = null;
      }
      this.log("receive", `${(payload && payload.status) || ""} ${topic} ${event} ${
        ref ? "(" + ref + ")" : ""}`, payload);
      for (const channel of this.channels.slice()) {
        if (channel.isMember(topic, event, payload, join_ref)) {
          channel.trigger(event, payload, ref, join_ref);
        }
      }
      this.stateChangeCallbacks.message.forEach(([, cb]) => cb(msg));
    }

    flushSendBuffer() {
      if (this.isConnected() && this.sendBuffer.length > 0) {
        this.sendBuffer.forEach((send) => send());
        this.sendBuffer = [];
      }
    }

    resetHeartbeat() {
      this.pendingHeartbeatRef = null;
      clearTimeout(this.heartbeatTimer);
      this.heartbeatTimer = setTimeout(() => this.sendHeartbeat(), this.heartbeatIntervalMs);
    }

    sendHeartbeat() {
      if (!this.isConnected()) return;
      if (this.pendingHeartbeatRef) {
        // The previous heartbeat got no answer: the connection is dead even if the browser has
        // not noticed. Drop it and reconnect (the channels rejoin on open).
        this.pendingHeartbeatRef = null;
        this.log("transport", "heartbeat timeout; reconnecting");
        this.teardown(() => this.reconnectTimer.scheduleTimeout(), WS_CLOSE_NORMAL,
                      "heartbeat timeout");
        return;
      }
      this.pendingHeartbeatRef = this.makeRef();
      this.push({topic: CONTROL_TOPIC, event: "heartbeat", payload: {}, ref: this.pendingHeartbeatRef});
      this.heartbeatTimer = setTimeout(() => this.sendHeartbeat(), this.heartbeatIntervalMs);
    }
  }

  /** Presence of a channel's topic, kept in sync from presence_state and presence_diff. */
  class Presence {
    constructor(channel, opts = {}) {
      const events = opts.events || {state: "presence_state", diff: "presence_diff"};
      this.state = {};
      this.pendingDiffs = [];
      this.channel = channel;
      this.joinRef = null;
      this.caller = {onJoin() {}, onLeave() {}, onSync() {}};
      channel.on(events.state, (newState) => {
        const {onJoin, onLeave, onSync} = this.caller;
        this.joinRef = this.channel.joinRef();
        this.state = Presence.syncState(this.state, newState, onJoin, onLeave);
        this.pendingDiffs.forEach((diff) => {
          this.state = Presence.syncDiff(this.state, diff, onJoin, onLeave);
        });
        this.pendingDiffs = [];
        onSync();
      });
      channel.on(events.diff, (diff) => {
        const {onJoin, onLeave, onSync} = this.caller;
        if (this.inPendingSyncState()) {
          this.pendingDiffs.push(diff);
        } else {
          this.state = Presence.syncDiff(this.state, diff, onJoin, onLeave);
          onSync();
        }
      });
    }
    onJoin(callback) { this.caller.onJoin = callback; }
    onLeave(callback) { this.caller.onLeave = callback; }
    onSync(callback) { this.caller.onSync = callback; }
    /** chooser(key, {metas}) for each key present; the presences themselves by default. */
    list(by) {
      return Presence.list(this.state, by);
    }
    inPendingSyncState() {
      return !this.joinRef || this.joinRef !== this.channel.joinRef();
    }

    /** Turns a full state into joins and leaves against the current one, by meta ref. */
    static syncState(currentState, newState, onJoin, onLeave) {
      const state = Presence.clone(currentState);
      const joins = {};
      const leaves = {};
      Presence.map(state, (key, presence) => {
        if (!newState[key]) leaves[key] = presence;
      });
      Presence.map(newState, (key, newPresence) => {
        const current = state[key];
        if (current) {
          const newRefs = newPresence.metas.map((m) => m.hb_ref);
          const curRefs = current.metas.map((m) => m.hb_ref);
          const joinedMetas = newPresence.metas.filter((m) => curRefs.indexOf(m.hb_ref) < 0);
          const leftMetas = current.metas.filter((m) => newRefs.indexOf(m.hb_ref) < 0);
          if (joinedMetas.length > 0) {
            joins[key] = Presence.clone(newPresence);
            joins[key].metas = joinedMetas;
          }
          if (leftMetas.length > 0) {
            leaves[key] = Presence.clone(current);
            leaves[key].metas = leftMetas;
          }
        } else {
          joins[key] = newPresence;
        }
      });
      return Presence.syncDiff(state, {joins, leaves}, onJoin, onLeave);
    }

    /** Applies {joins, leaves}: joined metas added (by ref), left metas removed (by ref). */
    static syncDiff(state, diff, onJoin, onLeave) {
      const {joins, leaves} = Presence.clone(diff);
      onJoin = onJoin || function () {};
      onLeave = onLeave || function () {};
      Presence.map(joins || {}, (key, newPresence) => {
        const current = state[key];
        state[key] = Presence.clone(newPresence);
        if (current) {
          const joinedRefs = state[key].metas.map((m) => m.hb_ref);
          const curMetas = current.metas.filter((m) => joinedRefs.indexOf(m.hb_ref) < 0);
          state[key].metas.unshift(...curMetas);
        }
        onJoin(key, current, newPresence);
      });
      Presence.map(leaves || {}, (key, leftPresence) => {
        const current = state[key];
        if (!current) return;
        const refsToRemove = leftPresence.metas.map((m) => m.hb_ref);
        current.metas = current.metas.filter((m) => refsToRemove.indexOf(m.hb_ref) < 0);
        onLeave(key, current, leftPresence);
        if (current.metas.length === 0) delete state[key];
      });
      return state;
    }

    static list(presences, chooser) {
      chooser = chooser || ((key, pres) => pres);
      return Presence.map(presences, (key, presence) => chooser(key, presence));
    }
    static map(obj, func) {
      return Object.getOwnPropertyNames(obj).map((key) => func(key, obj[key]));
    }
    static clone(obj) {
      return JSON.parse(JSON.stringify(obj));
    }
  }

  const Hornbeam = {Socket, Channel, Push, Presence, Timer};
  if (typeof module !== "undefined" && module.exports) module.exports = Hornbeam;
  root.Hornbeam = Hornbeam;
})(typeof globalThis !== "undefined" ? globalThis : typeof window !== "undefined" ? window : this);
