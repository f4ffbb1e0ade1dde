"""Summarise a pip-audit JSON report (scripts/audit): exit 1 on an unexplained known
vulnerability; packages that could not be audited only warn (see security/README.md)."""
import json
import sys


def main(path: str) -> int:
    dependencies = json.load(open(path))["dependencies"]
    skipped = [d for d in dependencies if "skip_reason" in d]
    # pip-audit already dropped the IDs listed in security/audit-ignores.txt.
    findings = [(d["name"], d["version"], v) for d in dependencies for v in d.get("vulns", [])]
    print(f"audit: {len(dependencies)} installed packages, {len(dependencies) - len(skipped)} audited, "
          f"{len(skipped)} not audited, {len(findings)} unexplained known vulnerabilities")
    for name, version, vuln in findings:
        fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed version"
        aliases = ", ".join(vuln.get("aliases", []))
        print(f"  VULNERABLE {name} {version}: {vuln['id']} ({aliases}); fixed in: {fixes}")
    if findings:
        print("audit: raise the pin, or explain the ID in security/audit-ignores.txt", file=sys.stderr)
    if skipped:
        print("\n*** audit: WARNING: not audited (version unknown to the vulnerability service, or it "
              "was unreachable): " + ", ".join(d["name"] for d in skipped), file=sys.stderr)
        if len(skipped) == len(dependencies):
            print("*** audit: WARNING: NOTHING WAS AUDITED; see security/README.md ***\n", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
