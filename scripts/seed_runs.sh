# Shared by the scripts that start a frontier's run folder from another's (sourced, not run):
# posttrain_final_rescore.sh, posttrain_kl.sh, posttrain_sil.sh. A point already in the new
# folder is never touched, so a rerun resumes.

# seed_folder SRC DST HINT: DST exists with SRC's model.json; HINT says how to make a missing SRC
seed_folder() {
  [ -d "$1" ] || { echo "$1: run $3 first" >&2; exit 1; }
  mkdir -p "$2"
  cp -n "$1/model.json" "$2/"
}

# copy_point SRC DST TAG: the finished point TAG (e.g. 16x/greedy-s0) copied whole
copy_point() {
  [ -e "$2/$3" ] || { mkdir -p "$2/$(dirname "$3")" && cp -r "$1/$3" "$2/$3"; }
}

# copy_search SRC DST TAG FILE...: those of the point's search files that exist (its agent,
# episode log or allocators' demonstrations), so that only what follows them runs again
copy_search() {
  local src=$1 dst=$2 tag=$3 f
  shift 3
  [ -e "$dst/$tag" ] && return 0
  mkdir -p "$dst/$tag/search"
  for f in "$@"; do
    [ -f "$src/$tag/search/$f" ] && cp "$src/$tag/search/$f" "$dst/$tag/search/"
  done
  return 0
}

# default_ratios ARGS...: sets the array `ratios` to --ratios 8 12 16 unless ARGS give --ratios
default_ratios() {
  ratios=(--ratios 8 12 16)
  local a
  for a in "$@"; do [ "$a" = --ratios ] && ratios=(); done
  return 0
}
