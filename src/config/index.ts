// Public API of the configuration: load and validate postern.yaml into a PosternConfig.
export { ConfigError, decodeConfig, loadConfig, parseConfigText } from "./load.js"
export type { ConfigErrorReason, ConfigIssue } from "./load.js"
export { PostfixDuration, formatDuration, parseDuration } from "./duration.js"
export { BUILTIN_SERVICES, DEFAULTS, PosternConfigSchema, parseNexthop } from "./schema.js"
export type { Nexthop, Parsed, PosternConfigDocument } from "./schema.js"
export type * from "./types.js"
