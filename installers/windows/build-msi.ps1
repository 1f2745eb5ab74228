<#
.SYNOPSIS
    Builds the pointsd MSI from installers\windows\pointsd.wxs with the WiX CLI (v4 or later).

.DESCRIPTION
    Needs the .NET SDK and the wix tool:  dotnet tool install --global wix
    No WiX extension is needed: the service failure actions are Windows Installer 5.0 tables.
    On Linux, installers/windows/build-msi.sh builds the MSI from the same pointsd.wxs with wixl.

.EXAMPLE
    cargo build --release
    powershell -ExecutionPolicy Bypass -File installers\windows\build-msi.ps1
    # -> target\pointsd-<version>-x64.msi
#>
[CmdletBinding()]
param(
    # Package version; default: version in Cargo.toml. An MSI version is numeric
    # (major.minor.patch), so a pre-release suffix such as -rc.1 is dropped.
    [string]$Version,
    # The pointsd.exe to package; default target\release\pointsd.exe.
    [string]$Binary,
    # The .msi to write; default target\pointsd-<version>-x64.msi.
    [string]$Output
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$repo = (Resolve-Path (Join-Path $PSScriptRoot '..\..')).Path

if (-not $Version) {
    $match = Select-String -Path (Join-Path $repo 'Cargo.toml') -Pattern '^version\s*=\s*"([^"]+)"' |
        Select-Object -First 1
    if (-not $match) { throw 'no version = "..." line in Cargo.toml; pass -Version' }
    $Version = $match.Matches[0].Groups[1].Value
}
$msiVersion = ($Version -split '[-+]')[0]

if (-not $Binary) { $Binary = Join-Path $repo 'target\release\pointsd.exe' }
if (-not (Test-Path -LiteralPath $Binary -PathType Leaf)) {
    throw "pointsd.exe not found at $Binary; run 'cargo build --release' or pass -Binary"
}
$Binary = (Resolve-Path -LiteralPath $Binary).Path
if (-not $Output) { $Output = Join-Path $repo "target\pointsd-$Version-x64.msi" }

if (-not (Get-Command wix -ErrorAction SilentlyContinue)) {
    throw 'wix not found: install it with "dotnet tool install --global wix"'
}

$wixArgs = @(
    'build', (Join-Path $PSScriptRoot 'pointsd.wxs'),
    '-arch', 'x64',
    '-d', "Version=$msiVersion",
    '-d', "BinaryPath=$Binary",
    '-d', ("ConfigSource=" + (Join-Path $repo 'config\pointsd.example.toml')),
    '-d', ("ReadmeSource=" + (Join-Path $repo 'README.md')),
    '-o', $Output
)
& wix @wixArgs
if ($LASTEXITCODE -ne 0) { throw "wix build failed with exit code $LASTEXITCODE" }
Write-Host "built $Output"
