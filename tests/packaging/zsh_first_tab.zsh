# zsh -f zsh_first_tab.zsh COMPDIR DUMP: in a new interactive zsh (compinit, COMPDIR
# first on fpath) type `jit req` and one Tab; print the command line it left.
# Used by tests/packaging/test_client_layout.py and scripts/ci-deb-client.
zmodload zsh/zpty
upto() {  # the shell's output until it holds $1 (the caller's timeout ends a hang)
  local chunk
  while [[ $all != *"$1"* ]]; do
    zpty -r -t z chunk || sleep 0.1
    all+=$chunk
  done
}
all=
zpty z "zsh -f -i"
zpty -w z "PS1='%% '; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -d $2; print RE''ADY"
upto $'\nREADY'
all=
# The completed line becomes the argument of a print: `LINE=<line>]`.
zpty -w -n z $'jit req\t'
zpty -w z $'\C-aprint -r -- LI""NE=\C-e]'
upto $'\nLINE='
upto ']'
all=${all##*$'\n'LINE=}
print -r -- "${all%%\]*}"
zpty -d z
