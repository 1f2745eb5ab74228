#!/usr/bin/env python3
"""Builds the pointsd MSI on Linux from the one WiX v4 source, installers/windows/pointsd.wxs.

msitools' wixl reads the WiX v3 dialect (Product > Package, Win64, no StandardDirectory) and
cannot write some tables. This script, called by build-msi.sh:

 1. reads pointsd.wxs (its <?define?> defaults, overridden by -D NAME=VALUE), and writes the
    v3-dialect equivalent wixl accepts (--wixl-out, for inspection);
 2. runs wixl on it;
 3. adds with msibuild what wixl cannot express, taken from the same source:
      Component Permanent / NeverOverwrite   -> Component.Attributes bits 0x10 / 0x80
      ServiceInstall Vital="yes"             -> ServiceInstall.ErrorControl bit 0x8000
      PermissionEx Sddl                      -> table MsiLockPermissionsEx
      ServiceConfigFailureActions, Failure   -> table MsiServiceConfigFailureActions
      ServiceConfig (delayed start, failure
        actions after an error exit)         -> table MsiServiceConfig
      (both service tables need the action)  -> InstallExecuteSequence MsiConfigureServices
    the rows are what WiX writes for the same elements (Windows Installer 5.0 tables).

Any element or attribute this script does not know stops the build: a change to pointsd.wxs
must be taught here rather than silently dropped from the Linux-built MSI.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

V4 = "http://wixtoolset.org/schemas/v4/wxs"
V3 = "http://schemas.microsoft.com/wix/2006/wi"

# Component attribute bits (msidbComponentAttributes*), ServiceInstall ErrorControl vital bit.
PERMANENT = 0x10
NEVER_OVERWRITE = 0x80
ERROR_CONTROL_VITAL = 0x8000
# MsiServiceConfig / MsiServiceConfigFailureActions Event bits.
EVENT_INSTALL, EVENT_UNINSTALL, EVENT_REINSTALL = 1, 2, 4
# MsiServiceConfig ConfigType values (SERVICE_CONFIG_*).
DELAYED_AUTO_START_INFO = 3
FAILURE_ACTIONS_FLAG = 4
FAILURE_ACTION = {"none": "0", "restartService": "1", "restartComputer": "2", "runCommand": "3"}


class Unsupported(Exception):
    pass


def local(tag):
    ns, _, name = tag[1:].partition("}")
    if ns != V4:
        raise Unsupported(f"element {tag}: only the WiX v4 namespace {V4} is handled")
    return name


def preprocess(text, defines):
    """The <?ifndef X?><?define X = "v"?><?endif?> defaults, then $(var.X) in attributes."""
    values = {}
    for m in re.finditer(r'<\?define\s+([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"]*)"\s*\?>', text):
        values[m.group(1)] = m.group(2)
    values.update(defines)
    for m in re.finditer(r"<\?(\w+)", text):
        if m.group(1) not in ("xml", "ifndef", "define", "endif"):
            raise Unsupported(f"preprocessor instruction <?{m.group(1)}?>")
    text = re.sub(r"<\?(ifndef|define|endif)\b[^?]*\?>", "", text)

    def sub(m):
        if m.group(1) not in values:
            raise Unsupported(f"undefined variable $(var.{m.group(1)})")
        return values[m.group(1)]

    return re.sub(r"\$\(var\.([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def yes(v):
    return v == "yes"


class Converter:
    def __init__(self, base):
        self.base = base  # the folder wixl runs in
        self.post = {
            "component_bits": {},  # component id -> bits to OR in
            "vital_services": [],  # ServiceInstall ids
            "locks": [],  # (id, lock object, table, sddl)
            "service_config": [],  # rows of MsiServiceConfig
            "failure_actions": [],  # rows of MsiServiceConfigFailureActions
        }

    @staticmethod
    def take(e, allowed):
        extra = set(e.attrib) - set(allowed)
        if extra:
            raise Unsupported(f"{local(e.tag)} attribute(s) {sorted(extra)}")
        return {k: v for k, v in e.attrib.items()}

    def el(self, parent, name, attrs):
        return ET.SubElement(parent, f"{{{V3}}}{name}", {k: v for k, v in attrs.items() if v is not None})

    def convert(self, root):
        if local(root.tag) != "Wix":
            raise Unsupported("the root must be Wix")
        out = ET.Element(f"{{{V3}}}Wix")
        for child in root:
            name = local(child.tag)
            if name == "Package":
                self.package(out, child)
            elif name == "Fragment":
                frag = self.el(out, "Fragment", {})
                for g in child:
                    if local(g.tag) != "ComponentGroup":
                        raise Unsupported(f"Fragment child {local(g.tag)}")
                    self.component_group(frag, g)
            else:
                raise Unsupported(f"Wix child {name}")
        return out

    def package(self, out, pkg):
        a = self.take(pkg, ["Name", "Manufacturer", "Version", "UpgradeCode", "Scope",
                            "Language", "InstallerVersion"])
        product = self.el(out, "Product", {
            "Id": "*", "Name": a["Name"], "Manufacturer": a["Manufacturer"],
            "Version": a["Version"], "UpgradeCode": a["UpgradeCode"],
            "Language": a.get("Language", "1033"),
        })
        summary = pkg.find(f"{{{V4}}}SummaryInformation")
        self.el(product, "Package", {
            "InstallerVersion": a.get("InstallerVersion", "500"),
            "Compressed": "yes",
            "InstallScope": a.get("Scope", "perMachine"),
            "Manufacturer": a["Manufacturer"],
            "Description": summary.get("Description") if summary is not None else None,
        })
        targetdir = None
        for child in pkg:
            name = local(child.tag)
            if name == "SummaryInformation":
                self.take(child, ["Description"])
            elif name == "MajorUpgrade":
                self.el(product, "MajorUpgrade", self.take(child, ["DowngradeErrorMessage"]))
            elif name == "MediaTemplate":
                self.el(product, "MediaTemplate", self.take(child, ["EmbedCab"]))
            elif name == "Property":
                self.el(product, "Property", self.take(child, ["Id", "Value"]))
            elif name == "StandardDirectory":
                if targetdir is None:
                    targetdir = self.el(product, "Directory", {"Id": "TARGETDIR", "Name": "SourceDir"})
                std = self.el(targetdir, "Directory", self.take(child, ["Id"]))
                for d in child:
                    self.directory(std, d)
            elif name == "Feature":
                feat = self.el(product, "Feature", self.take(child, ["Id", "Title", "Level"]))
                for r in child:
                    rn = local(r.tag)
                    if rn not in ("ComponentGroupRef", "ComponentRef"):
                        raise Unsupported(f"Feature child {rn}")
                    self.el(feat, rn, self.take(r, ["Id"]))
            else:
                raise Unsupported(f"Package child {name}")

    def directory(self, parent, d):
        if local(d.tag) != "Directory":
            raise Unsupported(f"directory child {local(d.tag)}")
        new = self.el(parent, "Directory", self.take(d, ["Id", "Name"]))
        for c in d:
            self.directory(new, c)

    def component_group(self, frag, g):
        a = self.take(g, ["Id", "Directory"])
        group = self.el(frag, "ComponentGroup", a)
        for c in g:
            if local(c.tag) != "Component":
                raise Unsupported(f"ComponentGroup child {local(c.tag)}")
            self.component(group, c, a["Directory"])

    def component(self, group, c, directory):
        a = self.take(c, ["Id", "Guid", "Bitness", "Permanent", "NeverOverwrite"])
        cid = a["Id"]
        if a.get("Bitness") not in (None, "always64"):
            raise Unsupported(f"Component {cid} Bitness={a['Bitness']}")
        comp = self.el(group, "Component", {
            "Id": cid, "Guid": a.get("Guid", "*"),
            "Win64": "yes" if a.get("Bitness") == "always64" else None,
        })
        bits = (PERMANENT if yes(a.get("Permanent")) else 0) | (
            NEVER_OVERWRITE if yes(a.get("NeverOverwrite")) else 0)
        if bits:
            self.post["component_bits"][cid] = bits
        for child in c:
            name = local(child.tag)
            if name == "File":
                f = self.take(child, ["Id", "Name", "Source", "KeyPath"])
                # wixl looks a Source up relative to "." and the input's folder only.
                f["Source"] = os.path.relpath(os.path.abspath(f["Source"]), self.base)
                self.el(comp, "File", f)
                self.locks(child, f["Id"], "File")
            elif name == "CreateFolder":
                self.take(child, [])
                self.el(comp, "CreateFolder", {})
                self.locks(child, directory, "CreateFolder")
            elif name == "RegistryValue":
                self.el(comp, "RegistryValue",
                        self.take(child, ["Root", "Key", "Name", "Type", "Value", "KeyPath"]))
            elif name == "ServiceInstall":
                self.service_install(comp, child, cid)
            elif name == "ServiceControl":
                self.el(comp, "ServiceControl",
                        self.take(child, ["Id", "Name", "Start", "Stop", "Remove", "Wait"]))
            else:
                raise Unsupported(f"Component child {name}")

    def locks(self, e, obj, table):
        for p in e:
            if local(p.tag) != "PermissionEx":
                raise Unsupported(f"{local(e.tag)} child {local(p.tag)}")
            sddl = self.take(p, ["Sddl"])["Sddl"]
            n = len(self.post["locks"])
            self.post["locks"].append((f"Lock{n}{obj}"[:72], obj, table, sddl))

    @staticmethod
    def events(a):
        return ((EVENT_INSTALL if yes(a.get("OnInstall")) else 0)
                | (EVENT_UNINSTALL if yes(a.get("OnUninstall")) else 0)
                | (EVENT_REINSTALL if yes(a.get("OnReinstall")) else 0))

    def service_install(self, comp, s, cid):
        a = self.take(s, ["Id", "Name", "DisplayName", "Description", "Type", "Start",
                          "ErrorControl", "Account", "Arguments", "Vital"])
        vital = yes(a.pop("Vital", "no"))
        self.el(comp, "ServiceInstall", a)
        if vital:
            self.post["vital_services"].append(a["Id"])
        for child in s:
            name = local(child.tag)
            if name == "ServiceConfigFailureActions":
                f = self.take(child, ["Id", "OnInstall", "OnReinstall", "OnUninstall",
                                      "ResetPeriod"])
                actions, delays = [], []
                for fail in child:
                    if local(fail.tag) != "Failure":
                        raise Unsupported(f"ServiceConfigFailureActions child {local(fail.tag)}")
                    fa = self.take(fail, ["Action", "Delay"])
                    actions.append(FAILURE_ACTION[fa["Action"]])
                    delays.append(fa["Delay"])
                self.post["failure_actions"].append([
                    f["Id"], a["Name"], str(self.events(f)), f.get("ResetPeriod", ""), "", "",
                    "[~]".join(actions), "[~]".join(delays), cid])
            elif name == "ServiceConfig":
                f = self.take(child, ["Id", "OnInstall", "OnReinstall", "OnUninstall",
                                      "DelayedAutoStart", "FailureActionsWhen"])
                ev = str(self.events(f))
                if "DelayedAutoStart" in f:
                    self.post["service_config"].append([
                        f["Id"] + "Delayed", a["Name"], ev, str(DELAYED_AUTO_START_INFO),
                        "1" if yes(f["DelayedAutoStart"]) else "0", cid])
                when = f.get("FailureActionsWhen")
                if when is not None:
                    flag = {"failedToStop": "0", "failedToStopOrReturnedError": "1"}[when]
                    self.post["service_config"].append([
                        f["Id"] + "FailureFlag", a["Name"], ev, str(FAILURE_ACTIONS_FLAG), flag, cid])
            else:
                raise Unsupported(f"ServiceInstall child {name}")


# --- msibuild post-processing -------------------------------------------------------------

def export(msi, table):
    """A table as (header lines, rows) from `msiinfo export` (IDT: names, types, keys)."""
    out = subprocess.run(["msiinfo", "export", msi, table], check=True, capture_output=True,
                         text=True, encoding="utf-8").stdout
    lines = [line for line in out.splitlines() if line != ""]
    return lines[:3], [line.split("\t") for line in lines[3:]]


def write_idt(workdir, table, header, rows):
    path = os.path.join(workdir, table + ".idt")
    with open(path, "w", encoding="utf-8", newline="") as f:
        for line in header:
            f.write(line + "\r\n")
        for r in rows:
            f.write("\t".join(r) + "\r\n")
    return path


def patch(msi, post):
    with tempfile.TemporaryDirectory() as w:
        imports = []
        header, rows = export(msi, "Component")
        col = header[0].split("\t").index("Attributes")
        seen = set()
        for r in rows:
            if r[0] in post["component_bits"]:
                r[col] = str(int(r[col]) | post["component_bits"][r[0]])
                seen.add(r[0])
        missing = set(post["component_bits"]) - seen
        if missing:
            raise SystemExit(f"wixl.py: components {sorted(missing)} not in the MSI")
        imports.append(write_idt(w, "Component", header, rows))

        if post["vital_services"]:
            header, rows = export(msi, "ServiceInstall")
            col = header[0].split("\t").index("ErrorControl")
            for r in rows:
                if r[0] in post["vital_services"]:
                    r[col] = str(int(r[col]) | ERROR_CONTROL_VITAL)
            imports.append(write_idt(w, "ServiceInstall", header, rows))

        if post["locks"]:
            imports.append(write_idt(w, "MsiLockPermissionsEx", [
                "MsiLockPermissionsEx\tLockObject\tTable\tSDDLText\tCondition",
                "s72\ts72\ts32\tl0\tS255",
                "MsiLockPermissionsEx\tMsiLockPermissionsEx",
            ], [[i, o, t, s, ""] for (i, o, t, s) in post["locks"]]))

        if post["failure_actions"]:
            imports.append(write_idt(w, "MsiServiceConfigFailureActions", [
                "MsiServiceConfigFailureActions\tName\tEvent\tResetPeriod\tRebootMessage\t"
                "Command\tActions\tDelayActions\tComponent_",
                "s72\tl255\ti2\tI4\tL255\tL255\tS255\tS255\ts72",
                "MsiServiceConfigFailureActions\tMsiServiceConfigFailureActions",
            ], post["failure_actions"]))
        if post["service_config"]:
            imports.append(write_idt(w, "MsiServiceConfig", [
                "MsiServiceConfig\tName\tEvent\tConfigType\tArgument\tComponent_",
                "s72\tl255\ti2\ti4\tS0\ts72",
                "MsiServiceConfig\tMsiServiceConfig",
            ], post["service_config"]))
        if post["failure_actions"] or post["service_config"]:
            # Sequence 5850 (after InstallServices, before StartServices), as WiX schedules it.
            header, rows = export(msi, "InstallExecuteSequence")
            if not any(r[0] == "MsiConfigureServices" for r in rows):
                rows.append(["MsiConfigureServices", "VersionNT>=600", "5850"])
            imports.append(write_idt(w, "InstallExecuteSequence", header, rows))

        cmd = ["msibuild", msi]
        for p in imports:
            cmd += ["-i", p]
        subprocess.run(cmd, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wxs")
    ap.add_argument("-D", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("-o", "--output", required=True, help="the .msi to write")
    ap.add_argument("--wixl-out", required=True, help="where to write the generated wixl input")
    args = ap.parse_args()
    defines = dict(d.split("=", 1) for d in args.D)
    with open(args.wxs, encoding="utf-8") as f:
        text = preprocess(f.read(), defines)
    wixl_out = os.path.abspath(args.wixl_out)
    base = os.path.dirname(wixl_out)
    conv = Converter(base)
    try:
        out = conv.convert(ET.fromstring(text))
    except Unsupported as e:
        raise SystemExit(f"wixl.py: {args.wxs}: {e} (teach installers/windows/wixl.py)")
    ET.register_namespace("", V3)
    ET.indent(out)
    with open(wixl_out, "w", encoding="utf-8") as f:
        f.write("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n")
        f.write(f"<!-- Generated by installers/windows/wixl.py from {os.path.basename(args.wxs)}: "
                "do not edit. -->\n")
        f.write(ET.tostring(out, encoding="unicode") + "\n")
    output = os.path.abspath(args.output)
    if os.path.exists(output):
        os.remove(output)
    subprocess.run(["wixl", "--arch", "x64", "-o", output, wixl_out], check=True, cwd=base)
    patch(output, conv.post)


if __name__ == "__main__":
    sys.exit(main())
