// UI text in English (default) and Chinese; the choice is kept in localStorage.
const TEXT = {
  en: {
    title: "Tollgate console", overview: "Overview", providers: "Providers", routes: "Routes",
    consumers: "Consumers", limits: "Limits, quotas and alerts", requests: "Requests",
    config: "Config", logout: "Log out", login: "Log in", user: "User", password: "Password",
    setup: "Set the administrator's password", setup_hint: "First run: create the first administrator.",
    admin_token: "Admin token", create: "Create", save: "Save", delete: "Delete",
    disable: "Disable", enable: "Enable", add_key: "Add key", key_name: "Key name",
    key: "API key", type: "Type", base_url: "Base URL", name: "Name", state: "State",
    weight: "Weight", source: "Source", actions: "Actions", range: "Range",
    tokens_in: "Input tokens/s", tokens_out: "Output tokens/s", req_s: "Requests/s",
    error_rate: "Error rate", latency: "Latency p50 / p99", ttft: "First token p50 / p99",
    total_requests: "Requests", total_in: "Input tokens", total_out: "Output tokens",
    by_provider: "Tokens by provider", by_model: "Tokens by model", by_consumer: "Tokens by consumer",
    latency_by_model: "Latency by model", key_health: "Key health", tokens: "Tokens",
    credential_once: "The credential is shown once. Copy it now:", copy: "Copy", copied: "Copied",
    rotate: "Rotate", balance: "Quota balance", top_up: "Top up", amount: "Amount",
    usage: "Usage", filter: "Filter", status: "Status", model: "Model", consumer: "Consumer",
    request_id: "Request id", time: "Time", detail: "Detail", revision: "Revision",
    who: "Who", what: "What", restore: "Restore", export: "Export (merged config)",
    read_only: "Read-only (viewer)", none: "Nothing yet.", refresh: "Refresh",
    language: "中文", theme: "Theme", healthy: "healthy", provider: "Provider", route: "Route",
    new_provider: "New provider", new_consumer: "New consumer", rules: "Rules",
    alerts: "Alert rules", rate_limits: "Rate limits", quota: "Quota", value: "Value",
    first_key: "First API key", all: "all", error: "Error", webhooks: "Webhooks", test: "Test",
    history: "Notices", since: "Since", notified: "Notified", other_gateway: "sent by another gateway",
    edit: "Edit", diff: "What the API changed", playground: "Playground", anonymous: "anonymous",
    message: "Message", send: "Send", first_token: "First token", active_streams: "Active streams (now)", attempts: "Attempts", duration: "Duration", changes: "Changes", in_now: "Input tokens/s (last minute)", out_now: "Output tokens/s (last minute)", req_now: "Requests/s (last minute)", stacked: "Token use over time, stacked by", window: "Window", threshold: "Threshold", format: "Format", path_prefix: "Path prefix", stream: "Stream", scope: "Scope", fleet: "the whole fleet", this_gateway: "this gateway", preset: "preset", code: "The same request from code",
  },
  zh: {
    title: "Tollgate 控制台", overview: "概览", providers: "AI 服务提供者", routes: "AI 路由",
    consumers: "消费者", limits: "限流、配额与告警", requests: "请求日志",
    config: "配置", logout: "退出登录", login: "登录", user: "用户名", password: "密码",
    setup: "设置管理员密码", setup_hint: "首次运行：创建第一个管理员。",
    admin_token: "管理令牌", create: "创建", save: "保存", delete: "删除",
    disable: "停用", enable: "启用", add_key: "添加密钥", key_name: "密钥名称",
    key: "API 密钥", type: "类型", base_url: "服务地址", name: "名称", state: "状态",
    weight: "权重", source: "来源", actions: "操作", range: "时间范围",
    tokens_in: "输入 token/秒", tokens_out: "输出 token/秒", req_s: "请求/秒",
    error_rate: "错误率", latency: "延迟 p50 / p99", ttft: "首 token p50 / p99",
    total_requests: "请求数", total_in: "输入 token", total_out: "输出 token",
    by_provider: "按提供者统计 token", by_model: "按模型统计 token", by_consumer: "按消费者统计 token",
    latency_by_model: "按模型统计延迟", key_health: "密钥健康", tokens: "token",
    credential_once: "凭证只显示一次，请立即复制：", copy: "复制", copied: "已复制",
    rotate: "轮换", balance: "配额余额", top_up: "充值", amount: "数量",
    usage: "用量", filter: "筛选", status: "状态码", model: "模型", consumer: "消费者",
    request_id: "请求 ID", time: "时间", detail: "详情", revision: "版本",
    who: "操作人", what: "变更", restore: "恢复", export: "导出（合并后的配置）",
    read_only: "只读（viewer）", none: "暂无数据。", refresh: "刷新",
    language: "English", theme: "主题", healthy: "健康", provider: "提供者", route: "路由",
    new_provider: "新建提供者", new_consumer: "新建消费者", rules: "规则",
    alerts: "告警规则", rate_limits: "限流规则", quota: "配额", value: "数值",
    first_key: "第一个 API 密钥", all: "全部", error: "错误", webhooks: "Webhook", test: "测试",
    history: "通知记录", since: "起始", notified: "通知时间", other_gateway: "由另一网关发送",
    edit: "编辑", diff: "API 所做的变更", playground: "调试", anonymous: "匿名",
    message: "消息", send: "发送", first_token: "首 token", active_streams: "当前活跃流", attempts: "尝试次数", duration: "耗时", changes: "变更内容", in_now: "输入 token/秒（最近一分钟）", out_now: "输出 token/秒（最近一分钟）", req_now: "请求/秒（最近一分钟）", stacked: "token 用量随时间堆叠，按", window: "时间窗口", threshold: "阈值", format: "格式", path_prefix: "路径前缀", stream: "流式", scope: "范围", fleet: "整个集群", this_gateway: "本网关", preset: "预设", code: "用代码发送同样的请求",
  },
};

export let lang = localStorage.getItem("tollgate.lang") === "zh" ? "zh" : "en";

export function setLang(l) {
  lang = l;
  localStorage.setItem("tollgate.lang", l);
  document.documentElement.lang = l === "zh" ? "zh-CN" : "en";
}

export function t(key) {
  return (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key;
}
