#!/usr/bin/env bash
# The main job, end to end: sets up the venv, starts reward_node as its own process, plays a synthetic
# camera (a gripper approaching the orange cylinder among other cubes and cylinders, 640x480 rgb8 + depth
# + camera_info) and prints each reward the node publishes beside the frame's true distance.
#
#   bash scripts/demo.sh                       # the shipped tiny spatial model (synthetic scenes only)
#   bash scripts/demo.sh --model Qwen/Qwen2.5-VL-7B-Instruct   # a real checkpoint: hub id or local dir
#   bash scripts/demo.sh --model ~/models/SpaceQwen2.5-VL-3B --frames 20 --rate 2
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model="" frames=20 rate=4 samples=1
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --frames) frames="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --samples) samples="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bash scripts/setup_env.sh
source scripts/ros_env.sh
if [ -z "$model" ]; then
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
  if "$venv/bin/python" -c "from spatialvlm_ros.models import shipped_model_path as p; p()" 2>/dev/null; then
    model="builtin:tiny-spatial"
    echo "[demo] no --model given: using the shipped tiny spatial model (builtin:tiny-spatial), a 2.4M-parameter"
    echo "[demo] Qwen2.5-VL trained on this synthetic tabletop world only; it knows nothing of real camera images."
  else
    model="$root/.cache/tiny_qwen2_5_vl"
    if [ ! -f "$model/config.json" ]; then
      "$venv/bin/spatialvlm_make_tiny_model" "$model" >/dev/null 2>&1
    fi
    echo "[demo] no --model given and no shipped model in this checkout: using a TINY RANDOM-WEIGHT"
    echo "[demo] Qwen2.5-VL built offline at $model. It runs the real loading/prompting/generation path,"
    echo "[demo] but its words are noise, so frames get 'no distance in the answer'. Pass --model for real rewards."
  fi
fi
# The demo camera's target (spatialvlm_ros.spatial.synthetic_scene.ApproachScene.target_description).
target="the orange cylinder"
node_log="$ROS_LOG_DIR/reward_node.out"
"$venv/bin/reward_node" --ros-args -p "model.name_or_path:=$model" -p "samples_per_frame:=$samples" \
  -p "model.max_new_tokens:=24" -p "target_object:=$target" >"$node_log" 2>&1 &
node_pid=$!
trap 'kill -INT $node_pid 2>/dev/null; wait $node_pid 2>/dev/null || true' EXIT
echo "[demo] reward_node started (pid $node_pid, log $node_log); loading the model..."
"$venv/bin/spatialvlm_demo_camera" --frames "$frames" --rate "$rate" --wait-s 120 &
camera_pid=$!
while kill -0 $camera_pid 2>/dev/null; do
  if ! kill -0 $node_pid 2>/dev/null; then
    echo "[demo] reward_node exited early:" >&2; cat "$node_log" >&2; kill $camera_pid 2>/dev/null; exit 1
  fi
  sleep 0.5
done
wait $camera_pid
status=$?
kill -INT $node_pid; wait $node_pid || true
trap - EXIT
echo "[demo] reward_node log (last lines):"; grep -v "Loading weights" "$node_log" | tail -n 5
exit $status
