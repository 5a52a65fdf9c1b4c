// Frame-count helper for the EasyAnimate nodes.
//
// The slice VAE decodes exactly 1, 8k or 8k+1 frames (8 frames = 2 latent frames, an odd first
// frame is encoded alone). The server floors any other count, so here the `length` widget snaps to
// a valid count as it is edited (the arrows step 8 -> 9 -> 16 -> 17, a typed value goes to the
// nearest valid count) and its label shows the latent frames the video will have.
// Context-window counts are in latent frames; their labels show the video frames they cover.
import { app } from "../../../scripts/app.js";

const LENGTH_NODES = new Set(["VDiT_EmptyLatentVideo", "VDiT_ImageToVideo"]);
const CONTEXT_NODE = "VDiT_ContextOptions";
const SLICE = 8; // frames per encoder slice
const LATENTS_PER_SLICE = 2;

export function isValidLength(frames) {
  return frames === 1 || (frames >= SLICE && (frames % SLICE === 0 || frames % SLICE === 1));
}

// A valid count near `frames`: one arrow step (+-1 from `previous`) moves on to the next valid count
// in that direction; a typed value goes to the nearest valid count (the lower one on a tie).
export function snapLength(frames, previous) {
  const value = Math.max(1, Math.round(frames));
  if (isValidLength(value)) return value;
  let down = value;
  while (!isValidLength(down)) down -= 1;
  let up = value;
  while (!isValidLength(up)) up += 1;
  if (previous === value - 1) return up;
  if (previous === value + 1) return down;
  return up - value < value - down ? up : down;
}

export function latentFrames(frames) {
  const lone = frames % 2; // an odd first frame gets a latent of its own
  return lone + ((frames - lone) / SLICE) * LATENTS_PER_SLICE;
}

function label(widget, text) {
  widget.label = `${widget.name} ${text}`;
}

// Run `update` now and after every edit of `widget`; keep it for refreshes after a workflow load.
function follow(node, widget, update) {
  const callback = widget.callback;
  widget.callback = function (value, ...rest) {
    const result = callback?.apply(this, [value, ...rest]);
    update();
    return result;
  };
  (node.vditRefresh ??= []).push(update);
  update();
}

function lengthUpdater(node, widget) {
  let previous = widget.value;
  return () => {
    const snapped = snapLength(widget.value, previous);
    if (snapped !== widget.value) widget.value = snapped;
    previous = snapped;
    label(widget, `(${latentFrames(snapped)} latent)`);
    node.setDirtyCanvas?.(true, true);
  };
}

app.registerExtension({
  name: "vdit.frames",
  nodeCreated(node) {
    const widgets = node.widgets ?? [];
    if (LENGTH_NODES.has(node.comfyClass)) {
      const widget = widgets.find((w) => w.name === "length");
      if (widget) follow(node, widget, lengthUpdater(node, widget));
    }
    if (node.comfyClass === CONTEXT_NODE) {
      for (const widget of widgets.filter((w) => ["context_length", "context_overlap"].includes(w.name))) {
        follow(node, widget, () => label(widget, `(${widget.value * (SLICE / LATENTS_PER_SLICE)} frames)`));
      }
    }
  },
  // a loaded workflow sets widget values after creation: refresh the labels (and snap old values)
  loadedGraphNode(node) {
    for (const update of node.vditRefresh ?? []) update();
  },
});
