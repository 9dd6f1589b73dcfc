#!/usr/bin/env bash
# The main job on real data: deformable registration of brain MR subject B onto subject A
# (../shared/data/brain-mr) with the command's defaults, Dice over the 30 structures of labels.txt.
# Installs RegSeg alone (no test or benchmark extras). Writes demo_output/: warped.nii.gz,
# transform.h5, affine.tfm, warped_labels.nii.gz, metrics.json, qc.png.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${REGSEG_DATA:-$root/../shared/data}/brain-mr"
out="${1:-$root/demo_output}"
py="$(bash "$root/Scripts/setup_env.sh" core)"
"$(dirname "$py")/regseg" register "$data/subject_a_t1.nii.gz" "$data/subject_b_t1.nii.gz" -o "$out" \
    --method deformable \
    --fixed-labels "$data/subject_a_aseg.nii.gz" --moving-labels "$data/subject_b_aseg.nii.gz" \
    --labels "$data/labels.txt"
echo "results in $out (metrics.json, qc.png)"
