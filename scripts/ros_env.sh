# Sourced by the demo and test scripts: the ROS 2 environment the venv's PyPI wheels need.
# (On a robot with ROS installed, `source /opt/ros/<distro>/setup.bash` plays this role.)
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SPATIALVLM_VENV:-$root/.venv}"
export PATH="$venv/bin:$PATH"
export AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:-$venv}"
# A private DDS domain per run, so two runs on one machine do not hear each other.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 100 + $$ % 100 ))}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$(mktemp -d -t spatialvlm_roslog.XXXXXX)}"
# Camera-sized messages need bigger shared-memory segments than Fast DDS's default (README).
export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTRTPS_DEFAULT_PROFILES_FILE:-$root/config/fastdds_shm.xml}"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$FASTRTPS_DEFAULT_PROFILES_FILE}"
export TOKENIZERS_PARALLELISM=false
