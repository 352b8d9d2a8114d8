#!/usr/bin/env python3
"""Check recorded system calls against a systemd unit's SystemCallFilter= (for tests/ops/syscalls.sh).

  syscall_check.py UNIT TRACE...

UNIT is a systemd service file; each TRACE is the output of `strace -f -qq -o TRACE CMD` (one
line per call: `PID name(args) = result`). The syscall groups (`@system-service`, ...) come
from `systemd-analyze syscall-filter`, nested groups expanded.

The unit's filter is evaluated the way systemd does (src/core/load-fragment.c,
config_parse_syscall_filter): assignments apply in order; an empty one resets the filter; the
first assignment decides the mode, an allow list (and then `@default` is added implicitly) or,
when it starts with `~`, a deny list; in allow-list mode later plain entries add to the list and
`~` entries remove from it, in deny-list mode the other way round. `name:ERRNO` suffixes are
ignored. RestrictAddressFamilies= is checked the same way against the families of the
`socket`/`socketpair` calls in the traces, and MemoryDenyWriteExecute=yes against the `mmap`
and `mprotect` calls (systemd refuses `mmap` with PROT_WRITE and PROT_EXEC, and `mprotect` or
`pkey_mprotect` adding PROT_EXEC).

Prints what was seen (per trace and in all) and every call or family the unit would refuse;
exits 1 if there is one, 2 on a usage or parsing problem.
"""
import collections
import re
import subprocess
import sys

CALL = re.compile(r"^(?:\[pid\s+\d+\]\s*|\d+\s+)?([a-z_][a-z0-9_]*)\((.*)$")
FAMILY = re.compile(r"^(AF_[A-Z0-9_]+|PF_[A-Z0-9_]+|\d+)")


def groups():
    """{"@group": [member, ...]} from `systemd-analyze syscall-filter`."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], check=True, capture_output=True, text=True
    ).stdout
    result, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.split()[0]
            result[current] = []
        elif line.startswith(" ") and current:
            word = line.strip()
            if word and not word.startswith("#"):
                result[current].append(word)
        elif not line.strip():
            current = None
    if "@system-service" not in result:
        sys.exit("syscall_check: no @system-service in `systemd-analyze syscall-filter`")
    return result


def expand(name, table, seen=None):
    """The system call names of a group (recursively) or of a single name."""
    if not name.startswith("@"):
        return {name}
    if name not in table:
        sys.exit(f"syscall_check: unknown syscall group {name}")
    seen = seen if seen is not None else set()
    if name in seen:
        return set()
    seen.add(name)
    names = set()
    for member in table[name]:
        names |= expand(member, table, seen)
    return names


def unit_assignments(path, key):
    """The values of every `key=` line of the unit's [Service] section, in order."""
    values, section, pending = [], None, ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if pending:
            line = pending + line
            pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            section = stripped
            continue
        if section == "[Service]" and "=" in stripped:
            k, v = stripped.split("=", 1)
            if k.strip() == key:
                values.append(v.strip())
    return values


def evaluate(assignments, expand_word, implicit_allow=()):
    """(allow_list, names) after applying the assignments as systemd does; None if unset."""
    allow_list, names = None, set()
    for value in assignments:
        if not value:
            allow_list, names = None, set()
            continue
        invert = value.startswith("~")
        if invert:
            value = value[1:]
        if allow_list is None:
            allow_list = not invert
            if allow_list:
                for word in implicit_allow:
                    names |= expand_word(word)
        for word in value.split():
            members = expand_word(word.split(":", 1)[0])
            if invert != allow_list:  # allow list + plain entry, or deny list + ~entry
                names |= members
            else:
                names -= members
    return allow_list, names


def allowed(mode, item):
    allow_list, names = mode
    if allow_list is None:
        return True
    return (item in names) == allow_list


def write_execute(name, args):
    """Whether a call maps or makes memory executable the way MemoryDenyWriteExecute refuses."""
    if name == "mmap":
        return "PROT_EXEC" in args and "PROT_WRITE" in args
    if name in ("mprotect", "pkey_mprotect"):
        return "PROT_EXEC" in args
    return False


def read_trace(path):
    """({name: calls}, {name: first line}, {family: first line}, [W^X lines]) of one strace
    output."""
    counts, first, families, wx = collections.Counter(), {}, {}, []
    for line in open(path, encoding="utf-8", errors="replace"):
        m = CALL.match(line)
        if not m:
            continue  # `<... x resumed>`, signals, exits
        name, args = m.group(1), m.group(2)
        counts[name] += 1
        first.setdefault(name, line.strip())
        if name in ("socket", "socketpair"):
            f = FAMILY.match(args)
            if f:
                family = f.group(1).replace("PF_", "AF_", 1)
                families.setdefault(family, line.strip())
        if write_execute(name, args):
            wx.append(f"{path}: {line.strip()}")
    return counts, first, families, wx


def columns(items, width=100):
    lines, line = [], "   "
    for item in items:
        if len(line) + len(item) + 1 > width:
            lines.append(line)
            line = "   "
        line += " " + item
    if line.strip():
        lines.append(line)
    return "\n".join(lines)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    unit, traces = sys.argv[1], sys.argv[2:]
    table = groups()
    filters = unit_assignments(unit, "SystemCallFilter")
    syscalls = evaluate(filters, lambda w: expand(w, table), implicit_allow=["@default"])
    families = evaluate(unit_assignments(unit, "RestrictAddressFamilies"), lambda w: {w})
    if syscalls[0] is None:
        print(f"note: {unit} has no SystemCallFilter=; every system call is allowed")
    else:
        kind = "allow" if syscalls[0] else "deny"
        print(f"unit: {unit}")
        for f in filters:
            print(f"  SystemCallFilter={f}")
        print(f"  -> an {kind} list of {len(syscalls[1])} system calls")

    mdwe = [v.lower() for v in unit_assignments(unit, "MemoryDenyWriteExecute")]
    mdwe = bool(mdwe) and mdwe[-1] in ("yes", "true", "1", "on")
    total, first, fams, wx = collections.Counter(), {}, {}, []
    for path in traces:
        counts, f, fam, w = read_trace(path)
        wx += w
        if not counts:
            print(f"FAIL: {path} holds no system call (was strace running?)")
            return 2
        print(f"{path}: {sum(counts.values())} calls, {len(counts)} distinct")
        total.update(counts)
        for k, v in f.items():
            first.setdefault(k, f"{path}: {v}")
        for k, v in fam.items():
            fams.setdefault(k, f"{path}: {v}")

    print(f"all: {sum(total.values())} calls, {len(total)} distinct system calls:")
    print(columns(f"{n}({c})" for n, c in sorted(total.items())))
    print(f"socket families: {' '.join(sorted(fams)) or 'none'}")

    refused = [n for n in sorted(total) if not allowed(syscalls, n)]
    refused_families = [f for f in sorted(fams) if not allowed(families, f)]
    for n in refused:
        print(f"NOT ALLOWED by SystemCallFilter: {n} ({total[n]} calls), e.g. {first[n][:200]}")
    for f in refused_families:
        print(f"NOT ALLOWED by RestrictAddressFamilies: {f}, e.g. {fams[f][:200]}")
    if not mdwe:
        wx = []
    for line in wx[:10]:
        print(f"NOT ALLOWED by MemoryDenyWriteExecute: {line[:200]}")
    if refused or refused_families or wx:
        print(
            f"FAIL: the unit refuses {len(refused)} system call(s), "
            f"{len(refused_families)} socket family(ies) and {len(wx)} writable-executable "
            f"mapping(s): {' '.join(refused + refused_families)}"
        )
        return 1
    print(
        f"ok: all {len(total)} distinct system calls are allowed by the unit's "
        f"SystemCallFilter=, the socket families ({' '.join(sorted(fams)) or 'none'}) "
        "by RestrictAddressFamilies="
        + (", and no mapping is both writable and executable (MemoryDenyWriteExecute=)" if mdwe else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
