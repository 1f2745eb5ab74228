<#
.SYNOPSIS
    Installs, upgrades or removes pointsd as the Windows service "pointsd" (for Intune, GPO or
    any tool that runs a script as SYSTEM or as an administrator).

.DESCRIPTION
    Install (safe to run again; an upgrade stops the service, replaces the binary, keeps the
    config and the data, and starts it again):
      %ProgramFiles%\pointsd\pointsd.exe       the binary (+ pointsd.example.toml)
      %ProgramData%\pointsd\                   ACL: SYSTEM and Administrators only, no inheritance
      %ProgramData%\pointsd\pointsd.toml       the config (holds secrets)
      %ProgramData%\pointsd\data\              database and logs (created by the service)
      service "pointsd": LocalSystem, delayed automatic start,
        pointsd.exe service-run --config "%ProgramData%\pointsd\pointsd.toml",
        restart after 5 s on the first three failures, failure count reset after one day.

    Uninstall stops and deletes the service and removes %ProgramFiles%\pointsd; the config and
    the data stay unless -Purge is given.

    Exit code 0 on success, 1 on any error (the message says what failed).

.PARAMETER Binary
    pointsd.exe to install. Default: pointsd.exe next to this script, else
    target\release\pointsd.exe of this checkout.

.PARAMETER ConfigSource
    A prepared pointsd.toml. Given: it replaces the current config (the old one is kept as
    pointsd.toml.bak). Not given: the example config is installed only when there is no config
    yet, and an existing config is never touched.

.PARAMETER Uninstall
    Stop and delete the service and remove the binary. Keeps %ProgramData%\pointsd.

.PARAMETER Purge
    With -Uninstall: also delete %ProgramData%\pointsd (config, database, logs).

.PARAMETER NoStart
    Install or upgrade without starting the service.

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File install.ps1 -Binary .\pointsd.exe -ConfigSource .\store-001.toml

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File install.ps1 -Uninstall -Purge
#>
[CmdletBinding()]
param(
    [string]$Binary,
    [string]$ConfigSource,
    [switch]$Uninstall,
    [switch]$Purge,
    [switch]$NoStart
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$ServiceName = 'pointsd'
$InstallDir = Join-Path $env:ProgramFiles 'pointsd'
$Exe = Join-Path $InstallDir 'pointsd.exe'
$DataRoot = Join-Path $env:ProgramData 'pointsd'
$ConfigPath = Join-Path $DataRoot 'pointsd.toml'
$Sc = Join-Path $env:SystemRoot 'System32\sc.exe'
$Icacls = Join-Path $env:SystemRoot 'System32\icacls.exe'
# Well-known SIDs, so the script works on any display language of Windows.
$SystemSid = '*S-1-5-18'
$AdminsSid = '*S-1-5-32-544'

function Write-Step([string]$Message) {
    Write-Host "pointsd: $Message"
}

# Runs a system tool with a command line passed verbatim. sc.exe wants "binPath= value" with
# the value's inner quotes escaped as \"; PowerShell's own argument quoting differs between
# versions, so the line is built here and handed over as it is.
function Invoke-Tool([string]$Path, [string]$CommandLine, [int[]]$AllowedExitCodes = @(0)) {
    $process = Start-Process -FilePath $Path -ArgumentList $CommandLine -NoNewWindow -Wait -PassThru
    if ($AllowedExitCodes -notcontains $process.ExitCode) {
        throw "$(Split-Path -Leaf $Path) $CommandLine failed with exit code $($process.ExitCode)"
    }
    return $process.ExitCode
}

function Test-Administrator {
    $identity = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object Security.Principal.WindowsPrincipal($identity)
    return $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
}

function Get-PointsdService {
    return Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
}

function Stop-PointsdService {
    $service = Get-PointsdService
    if ($service -and $service.Status -ne 'Stopped') {
        Write-Step 'stopping the service (in-flight requests finish, the queue stays on disk)'
        Stop-Service -Name $ServiceName -Force
        $service.WaitForStatus('Stopped', [TimeSpan]::FromSeconds(60))
    }
}

# The MSI registers itself under Uninstall; two installers for one service would fight.
function Test-MsiInstalled {
    $keys = @(
        'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\*',
        'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall\*'
    )
    $found = Get-ItemProperty -Path $keys -ErrorAction SilentlyContinue |
        Where-Object { $_.PSObject.Properties['DisplayName'] -and $_.DisplayName -eq 'pointsd' -and
            $_.PSObject.Properties['WindowsInstaller'] -and $_.WindowsInstaller -eq 1 }
    return [bool]$found
}

# %ProgramData%\pointsd: SYSTEM and Administrators only. /reset turns any explicit entry an
# older folder carries into plain inheritance; /inheritance:r then drops everything inherited
# (ProgramData grants Users read access) and /grant:r leaves exactly the two grants. The
# children are reset to inherit the new ACL.
function Set-DataRootAcl {
    New-Item -ItemType Directory -Force -Path $DataRoot | Out-Null
    Invoke-Tool $Icacls "`"$DataRoot`" /reset /Q" | Out-Null
    Invoke-Tool $Icacls "`"$DataRoot`" /inheritance:r /grant:r $SystemSid`:(OI)(CI)F $AdminsSid`:(OI)(CI)F /Q" | Out-Null
    if (Get-ChildItem -LiteralPath $DataRoot -Force) {
        Invoke-Tool $Icacls "`"$DataRoot\*`" /reset /T /C /Q" | Out-Null
    }
}

function Find-Default([string[]]$Candidates) {
    foreach ($candidate in $Candidates) {
        if (Test-Path -LiteralPath $candidate -PathType Leaf) { return (Resolve-Path -LiteralPath $candidate).Path }
    }
    return $null
}

function Install-Pointsd {
    if (Test-MsiInstalled) {
        throw 'pointsd is installed from the MSI: upgrade or remove it with the MSI (msiexec), not with this script'
    }

    if (-not $Binary) {
        $Binary = Find-Default @(
            (Join-Path $PSScriptRoot 'pointsd.exe'),
            (Join-Path $PSScriptRoot '..\..\target\release\pointsd.exe'),
            '.\pointsd.exe')
        if (-not $Binary) { throw 'no pointsd.exe found: pass -Binary PATH' }
    }
    if (-not (Test-Path -LiteralPath $Binary -PathType Leaf)) { throw "-Binary ${Binary}: no such file" }
    $Binary = (Resolve-Path -LiteralPath $Binary).Path

    $example = Find-Default @(
        (Join-Path $PSScriptRoot 'pointsd.example.toml'),
        (Join-Path $PSScriptRoot '..\..\config\pointsd.example.toml'))
    if ($ConfigSource -and -not (Test-Path -LiteralPath $ConfigSource -PathType Leaf)) {
        throw "-ConfigSource ${ConfigSource}: no such file"
    }

    # 1. Stop a running copy: Windows cannot replace a running .exe.
    Stop-PointsdService

    # 2. Binary (+ the example of this version, to compare with a kept config).
    New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
    Copy-Item -LiteralPath $Binary -Destination $Exe -Force
    if ($example) { Copy-Item -LiteralPath $example -Destination (Join-Path $InstallDir 'pointsd.example.toml') -Force }
    Write-Step "installed $Exe"

    # 3. ProgramData folder with its ACL, then the config inside it (inherits the ACL).
    Set-DataRootAcl
    if ($ConfigSource) {
        if (Test-Path -LiteralPath $ConfigPath) {
            Copy-Item -LiteralPath $ConfigPath -Destination "$ConfigPath.bak" -Force
            Write-Step "previous config kept as $ConfigPath.bak"
        }
        Copy-Item -LiteralPath $ConfigSource -Destination $ConfigPath -Force
        Write-Step "installed the config from $ConfigSource"
    } elseif (Test-Path -LiteralPath $ConfigPath) {
        Write-Step "keeping the existing $ConfigPath"
    } elseif ($example) {
        Copy-Item -LiteralPath $example -Destination $ConfigPath
        Write-Step "installed the example config at ${ConfigPath}: edit it, then check it with"
        Write-Step "  & '$Exe' config check --config '$ConfigPath'"
    } else {
        throw 'no example config found next to this script: pass -ConfigSource FILE'
    }
    # Files copied in keep no ACL of their own: make them inherit SYSTEM + Administrators only.
    Invoke-Tool $Icacls "`"$DataRoot\*`" /reset /T /C /Q" | Out-Null

    # 4. The service: create it, or update the existing one in place.
    $binPath = "\`"$Exe\`" service-run --config \`"$ConfigPath\`""
    if (Get-PointsdService) {
        Invoke-Tool $Sc "config $ServiceName binPath= `"$binPath`" start= delayed-auto" | Out-Null
        Write-Step 'updated the service'
    } else {
        Invoke-Tool $Sc "create $ServiceName binPath= `"$binPath`" start= delayed-auto DisplayName= `"pointsd loyalty point agent`"" | Out-Null
        Write-Step 'created the service'
    }
    Invoke-Tool $Sc "description $ServiceName `"Offline cache and exactly-once sync of Smaregi loyalty points for this store's registers.`"" | Out-Null
    # sc.exe sets no restart policy by itself. failureflag 1: also when the service stops with
    # an error code, not only when the process crashes.
    Invoke-Tool $Sc "failure $ServiceName reset= 86400 actions= restart/5000/restart/5000/restart/5000" | Out-Null
    Invoke-Tool $Sc "failureflag $ServiceName 1" | Out-Null

    # 5. Start.
    if ($NoStart) {
        Write-Step 'not started (-NoStart); start it with: sc.exe start pointsd'
        return
    }
    Invoke-Tool $Sc "start $ServiceName" | Out-Null
    try {
        (Get-PointsdService).WaitForStatus('Running', [TimeSpan]::FromSeconds(30))
    } catch {
        throw "the service did not reach Running within 30 s: see $DataRoot\data\logs and the Application event log"
    }
    Write-Step "service running; logs in $DataRoot\data\logs, check with: & '$Exe' doctor --config '$ConfigPath'"
}

function Uninstall-Pointsd {
    if (Test-MsiInstalled) {
        throw 'pointsd is installed from the MSI: remove it in Settings > Apps or with msiexec /x'
    }
    if (Get-PointsdService) {
        Stop-PointsdService
        Invoke-Tool $Sc "delete $ServiceName" | Out-Null
        Write-Step 'deleted the service'
    }
    if (Test-Path -LiteralPath $InstallDir) {
        Remove-Item -LiteralPath $InstallDir -Recurse -Force
        Write-Step "removed $InstallDir"
    }
    if ($Purge) {
        if (Test-Path -LiteralPath $DataRoot) {
            Remove-Item -LiteralPath $DataRoot -Recurse -Force
            Write-Step "purged $DataRoot (config, database, logs)"
        }
    } else {
        Write-Step "kept $DataRoot (config, database, logs); -Uninstall -Purge deletes it"
    }
}

# Intune runs scripts in 32-bit PowerShell by default, where %ProgramFiles% is the x86 folder
# and System32 is redirected: run again in the 64-bit PowerShell.
if ([Environment]::Is64BitOperatingSystem -and -not [Environment]::Is64BitProcess) {
    $native = Join-Path $env:WINDIR 'sysnative\WindowsPowerShell\v1.0\powershell.exe'
    $relaunch = @('-NoProfile', '-ExecutionPolicy', 'Bypass', '-File', $PSCommandPath)
    if ($Binary) { $relaunch += @('-Binary', $Binary) }
    if ($ConfigSource) { $relaunch += @('-ConfigSource', $ConfigSource) }
    if ($Uninstall) { $relaunch += '-Uninstall' }
    if ($Purge) { $relaunch += '-Purge' }
    if ($NoStart) { $relaunch += '-NoStart' }
    & $native @relaunch
    exit $LASTEXITCODE
}

try {
    if ($Purge -and -not $Uninstall) { throw '-Purge only goes with -Uninstall' }
    if (-not (Test-Administrator)) { throw 'run this as an administrator (or as SYSTEM)' }
    if ($Uninstall) { Uninstall-Pointsd } else { Install-Pointsd }
    exit 0
} catch {
    Write-Error "pointsd: $($_.Exception.Message)" -ErrorAction Continue
    exit 1
}
