/// The release version: written here only. scripts/package reads it for the package names.
let ratholeVersion = "0.1.0"
