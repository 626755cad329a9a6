// The 3D digital twin (docs/manifest.md, study guide part 2): a low-poly wireframe drilling
// rig in three.js.
//   vibration  → shake of the rig (position jitter)
//   rpm        → rotation speed of the drill string and bit
//   temperature→ colour from cyan to neon red past its warning/critical threshold
//   risk score → extra shake when detection.score > 0.8
// It animates only while the machine runs (rpm > 0 and readings arriving) and freezes
// otherwise; at most ~30 frames per second, and nothing at all while the tab is hidden.
// State for tests: window.__twin (frames, rotationSpeed, color, running, fps, sample()).

import * as THREE from "/static/vendor/three.module.js";
import { warnHigh } from "./thresholds.js";

export const MAX_FPS = 30;
const FRAME_MS = 1000 / MAX_FPS;
const STALE_MS = 5000;
const CYAN = new THREE.Color(0x22d3ee);
const RED = new THREE.Color(0xff2d55);
const BACKGROUND = 0x05080d;
// Visual scale: 3000 rpm shows as one turn per second (the real speed would only alias).
const RPM_PER_VISUAL_TURN_PER_S = 3000;

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

export class Twin {
  constructor(canvas) {
    this.canvas = canvas;
    this.renderer = new THREE.WebGLRenderer({
      canvas,
      antialias: false,
      alpha: false,
      powerPreference: "low-power",
    });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 1.5));
    this.renderer.setClearColor(BACKGROUND, 1);
    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(38, 1, 0.1, 200);
    this.camera.position.set(12.5, 8.5, 16);
    this.camera.lookAt(-0.6, 3.9, 0);
    this.material = new THREE.LineBasicMaterial({ color: CYAN.clone() });
    this.build();

    this.frames = 0;
    this.rotationSpeed = 0; // rad/s of the drill
    this.shake = 0;
    this.rpm = 0;
    this.lastReadingAt = -Infinity;
    this.lastFrameAt = 0;
    this.frameTimes = [];
    this.raf = null;

    this.resize();
    new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
    document.addEventListener("visibilitychange", () => this.wake());
    // Notices a machine that stopped sending (the loop then ends by itself).
    setInterval(() => this.wake(), 1000);
    this.renderOnce();
  }

  build() {
    const m = this.material;
    const edges = (geometry) => new THREE.LineSegments(new THREE.EdgesGeometry(geometry), m);
    const wire = (geometry) => new THREE.LineSegments(new THREE.WireframeGeometry(geometry), m);
    const at = (obj, x, y, z) => {
      obj.position.set(x, y, z);
      return obj;
    };

    const grid = new THREE.GridHelper(24, 24, 0x1c2a3a, 0x111a26);
    this.scene.add(grid);

    this.rig = new THREE.Group();
    this.scene.add(this.rig);
    // Substructure and drill floor.
    this.rig.add(at(edges(new THREE.BoxGeometry(6, 0.6, 6)), 0, 0.3, 0));
    this.rig.add(at(edges(new THREE.BoxGeometry(6.4, 0.1, 6.4)), 0, 0.65, 0));
    // Derrick: a four-sided tapered lattice tower.
    const derrick = wire(new THREE.CylinderGeometry(0.45, 2.0, 8, 4, 6, true));
    derrick.rotation.y = Math.PI / 4;
    this.rig.add(at(derrick, 0, 4.7, 0));
    // Crown block, drawworks, mud tanks, pipe rack.
    this.rig.add(at(edges(new THREE.BoxGeometry(1.1, 0.45, 1.1)), 0, 8.9, 0));
    this.rig.add(at(edges(new THREE.BoxGeometry(1.8, 1.1, 1.3)), 2.3, 1.25, 1.9));
    this.rig.add(at(edges(new THREE.BoxGeometry(1.4, 1.0, 3.4)), -4.4, 0.5, 0));
    this.rig.add(at(edges(new THREE.BoxGeometry(1.4, 1.0, 3.4)), -6.0, 0.5, 0));
    const rack = edges(new THREE.BoxGeometry(4.5, 0.4, 1.2));
    this.rig.add(at(rack, 0.5, 0.2, 4.6));

    // The drill: top drive, string and bit, turning about the vertical axis.
    this.drill = new THREE.Group();
    this.drill.add(at(edges(new THREE.BoxGeometry(0.8, 0.9, 0.5)), 0, 7.3, 0));
    this.drill.add(at(wire(new THREE.CylinderGeometry(0.12, 0.12, 7.6, 6, 4)), 0, 3.1, 0));
    this.drill.add(at(edges(new THREE.CylinderGeometry(0.75, 0.75, 0.18, 8)), 0, 0.8, 0));
    const bit = wire(new THREE.ConeGeometry(0.38, 0.9, 6, 1));
    bit.rotation.x = Math.PI;
    this.drill.add(at(bit, 0, -1.05, 0));
    // An arm on the string makes the rotation visible in a wireframe.
    this.drill.add(at(edges(new THREE.BoxGeometry(1.2, 0.12, 0.12)), 0.6, 5.5, 0));
    this.rig.add(this.drill);
  }

  resize() {
    const parent = this.canvas.parentElement;
    const width = Math.max(1, parent.clientWidth);
    const height = Math.max(1, parent.clientHeight);
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.renderOnce();
  }

  /** A reading arrived: values of the machine, its detection and its thresholds. */
  update({ rpm, vibration, temperature, risk, vibrationEntry, temperatureEntry }) {
    if (typeof rpm === "number") this.rpm = rpm;
    const turnsPerS = Math.max(0, this.rpm) / RPM_PER_VISUAL_TURN_PER_S;
    this.rotationSpeed = 2 * Math.PI * turnsPerS;
    const vibHigh = (vibrationEntry && vibrationEntry.critical_high) || 7;
    const vib = typeof vibration === "number" ? vibration : 0;
    const riskScore = typeof risk === "number" ? risk : 0;
    this.shake =
      clamp(vib / vibHigh, 0, 3) * 0.06 + (riskScore > 0.8 ? clamp(riskScore, 0, 3) * 0.05 : 0);
    this.setTemperature(temperature, temperatureEntry);
    this.lastReadingAt = performance.now();
    this.wake();
    if (!this.running()) this.renderOnce();
  }

  /** Colour: cyan up to the warning limit, shading to neon red at the critical limit. Also
   *  called when the thresholds change, so the model recolours without a new reading. */
  setTemperature(temperature, entry) {
    if (typeof temperature !== "number" || !entry) return;
    const high = entry.critical_high;
    const warn = warnHigh(entry);
    let mix = 0;
    if (typeof high === "number") {
      const start = warn ?? high;
      if (temperature >= high) mix = 1;
      else if (temperature > start) mix = (temperature - start) / Math.max(1e-9, high - start);
    }
    const before = this.material.color.getHex();
    this.material.color.copy(CYAN).lerp(RED, clamp(mix, 0, 1));
    if (this.material.color.getHex() !== before && !this.running()) this.renderOnce();
  }

  /** Freeze now (machine changed, or no data). */
  stop() {
    this.rpm = 0;
    this.rotationSpeed = 0;
    this.shake = 0;
    this.lastReadingAt = -Infinity;
    this.renderOnce();
  }

  running(now = performance.now()) {
    return this.rpm > 0 && now - this.lastReadingAt < STALE_MS;
  }

  wake() {
    if (this.raf === null && document.visibilityState === "visible" && this.running()) {
      this.lastFrameAt = performance.now();
      this.raf = requestAnimationFrame((t) => this.tick(t));
    }
  }

  tick(now) {
    this.raf = null;
    if (document.visibilityState !== "visible") return; // resumed by visibilitychange
    if (!this.running(now)) {
      this.rig.position.set(0, 0, 0);
      this.renderOnce();
      return; // frozen until the next reading
    }
    this.raf = requestAnimationFrame((t) => this.tick(t));
    const elapsed = now - this.lastFrameAt;
    if (elapsed < FRAME_MS - 1) return; // cap at ~30 fps
    this.lastFrameAt = now;
    const dt = Math.min(0.1, elapsed / 1000);
    this.drill.rotation.y = (this.drill.rotation.y + this.rotationSpeed * dt) % (2 * Math.PI);
    const a = this.shake;
    this.rig.position.set(
      a * Math.sin(now * 0.09) + a * 0.4 * (Math.random() - 0.5),
      a * 0.3 * Math.sin(now * 0.13),
      a * Math.cos(now * 0.07),
    );
    this.draw(now);
  }

  draw(now = performance.now()) {
    this.renderer.render(this.scene, this.camera);
    this.frames += 1;
    this.frameTimes.push(now);
    while (this.frameTimes.length && now - this.frameTimes[0] > 1000) this.frameTimes.shift();
  }

  renderOnce() {
    this.renderer.render(this.scene, this.camera);
  }

  fps() {
    const now = performance.now();
    return this.frameTimes.filter((t) => now - t <= 1000).length;
  }

  /** Renders and reads the pixels back: how many differ from the background, and a hash
   *  of the image (tests compare two samples to see motion). */
  sample() {
    this.renderOnce();
    const gl = this.renderer.getContext();
    const width = gl.drawingBufferWidth;
    const height = gl.drawingBufferHeight;
    const pixels = new Uint8Array(width * height * 4);
    gl.readPixels(0, 0, width, height, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
    const bg = new THREE.Color(BACKGROUND);
    const [br, bgc, bb] = [bg.r * 255, bg.g * 255, bg.b * 255].map(Math.round);
    let lit = 0;
    let hash = 0;
    let red = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      const r = pixels[i];
      const g = pixels[i + 1];
      const b = pixels[i + 2];
      if (Math.abs(r - br) + Math.abs(g - bgc) + Math.abs(b - bb) > 24) {
        lit += 1;
        hash = (hash * 31 + i + r) % 2147483647;
        if (r > 150 && g < 120) red += 1;
      }
    }
    return { width, height, lit, red, hash };
  }

  expose() {
    const twin = this;
    window.__twin = {
      get frames() {
        return twin.frames;
      },
      get rotationSpeed() {
        return twin.rotationSpeed;
      },
      get color() {
        return `#${twin.material.color.getHexString()}`;
      },
      get running() {
        return twin.running();
      },
      get shake() {
        return twin.shake;
      },
      get fps() {
        return twin.fps();
      },
      sample: () => twin.sample(),
    };
  }
}

export function createTwin(canvas) {
  try {
    const twin = new Twin(canvas);
    twin.expose();
    return twin;
  } catch (error) {
    const note = document.createElement("p");
    note.className = "twin-error";
    note.textContent = `3D view unavailable (WebGL): ${error.message}`;
    canvas.replaceWith(note);
    window.__twin = { error: String(error) };
    return null;
  }
}
