// The configuration as a service, and the layer that assembles Postern's runtime services: Config,
// Clock, Rng, Dns and Log. Tests build the same services with virtual time, a seed and a DNS table.
import { Context, Layer } from "effect"
import type { PosternConfig } from "../config/types.js"

export class AppConfig extends Context.Service<AppConfig, { readonly get: () => PosternConfig }>()("postern/config/AppConfig") {
  static readonly layerValue = (config: PosternConfig) => Layer.succeed(AppConfig, AppConfig.of({ get: () => config }))
}
