// The live stream: one WebSocket to /api/v1/stream, reconnected with exponential backoff
// (and jitter), with a "stale" state when nothing arrived for STALE_MS or the socket is down.
// The server sends a heartbeat every 2 s, so silence means a dead or stuck connection.

import { loginUrl } from "./api.js";
import { durationText } from "./format.js";

export const STALE_MS = 5000;
const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 15000;
// Close codes the server uses for refusals that a retry will not fix.
const CLOSE_UNAUTHENTICATED = 4401;
const FINAL_CODES = new Set([4400, 4403]);

export class LiveStream {
  /**
   * @param {{machines?: string[] | null, onEvent: (e: object) => void,
   *          onState?: (s: {state: string, detail: string}) => void}} options
   */
  constructor({ machines = null, onEvent, onState = () => {} }) {
    this.machines = machines;
    this.onEvent = onEvent;
    this.onState = onState;
    this.ws = null;
    this.attempt = 0;
    this.lastMessageAt = 0;
    this.state = "";
    this.stopped = false;
    this.retryTimer = null;
    this.connects = 0;
    this.watchdog = setInterval(() => this.check(), 500);
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const filter = this.machines && this.machines.length ? `?machines=${this.machines.join(",")}` : "";
    return `${scheme}//${location.host}/api/v1/stream${filter}`;
  }

  start() {
    this.stopped = false;
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.watchdog);
    if (this.ws) this.ws.close(1000, "page closed");
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.setState(this.connects ? "offline" : "connecting", "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (error) {
      this.scheduleRetry(String(error));
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.connects += 1;
    });
    ws.addEventListener("message", (message) => {
      this.lastMessageAt = performance.now();
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event.type === "hello") this.attempt = 0;
      if (event.type === "heartbeat" && event.live === false) {
        this.setState("stale", "server lost its database feed");
      } else {
        this.setState("live", "live");
      }
      this.onEvent(event);
    });
    ws.addEventListener("close", (close) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (close.code === CLOSE_UNAUTHENTICATED) {
        this.setState("refused", "session ended");
        location.assign(loginUrl());
        return;
      }
      if (FINAL_CODES.has(close.code)) {
        this.setState("refused", close.reason || "refused by the server");
        return;
      }
      this.scheduleRetry(close.reason || `closed (${close.code})`);
    });
  }

  scheduleRetry(detail) {
    const base = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** this.attempt);
    const delay = base * (0.5 + Math.random() / 2);
    this.attempt += 1;
    this.nextRetryAt = performance.now() + delay;
    this.setState("offline", `${detail}; retrying in ${durationText(delay)}`);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Watchdog: an open socket that has been silent for STALE_MS is stale (and is recycled
   *  after three times that, in case the connection died without a close). */
  check() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const silent = performance.now() - this.lastMessageAt;
    if (this.lastMessageAt && silent > STALE_MS) {
      this.setState("stale", `no message for ${durationText(silent)}`);
      if (silent > 3 * STALE_MS) this.ws.close(4000, "silent");
    }
  }

  isStale() {
    return this.state !== "live";
  }

  setState(state, detail) {
    if (state === this.state && detail === this.detail) return;
    this.state = state;
    this.detail = detail;
    this.onState({ state, detail });
  }
}
