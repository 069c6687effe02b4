# Shared by the bench scripts (sourced, from the repository root).

# Stops the run if a port it is about to listen on is taken: a server left over from an
# earlier run would answer in place of the one started here, and its figures would be wrong.
refuse_ports_in_use() { # port...
  local port
  for port in "$@"; do
    if ss -Hltn "sport = :$port" | grep -q .; then
      echo "port $port is in use (a server left from an earlier run?): stop it first" >&2
      exit 2
    fi
  done
}
