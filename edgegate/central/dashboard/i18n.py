"""The dashboard's words in Chinese (the default) and English.

Pages are rendered on the server in the language of the ``lang`` cookie (``?lang=en`` or
``?lang=zh`` on any page sets it), so a page reads the same with scripts off and prints in
the chosen language. Every key has both languages (``tests/test_dashboard_http.py`` checks).
"""

from __future__ import annotations

LANGS = ("zh", "en")
DEFAULT = "zh"

WORDS: dict[str, tuple[str, str]] = {
    # key: (zh, en)
    "title": ("园区监控台", "Park control room"),
    "nav.park": ("园区现况", "Park now"),
    "nav.gates": ("道口", "Gates"),
    "nav.roll-call": ("疏散点名", "Roll call"),
    "nav.events": ("事件查询", "Events"),
    "nav.proposals": ("超时与黑名单", "Overstays & blacklist"),
    "nav.reviews": ("准入复核", "Admission reviews"),
    "nav.dead-letters": ("死信", "Dead letters"),
    "switch": ("English", "中文"),
    "logout": ("退出", "Log out"),
    "login.title": ("园区监控台登录", "Park control room: log in"),
    "login.account": ("账号", "Account"),
    "login.password": ("密码", "Password"),
    "login.submit": ("登录", "Log in"),
    "login.refused": ("账号或密码错误", "Wrong account or password"),
    "login.locked": (
        "登录失败次数过多，请稍后再试",
        "Too many failed logins: try again later",
    ),
    "incident.banner": ("紧急疏散模式：", "Incident mode: "),
    "incident.see": ("查看疏散点名", "see the roll call"),
    "live.lost": ("实时连接中断，正在重连…", "Live updates lost: reconnecting…"),
    "generated": ("更新于", "As of"),
    "inside": ("园区内车辆", "Vehicles inside"),
    "inside.total": ("园区内合计", "Inside in all"),
    "inside.dangerous": ("危化品 / 危废车辆", "Hazmat / hazardous waste inside"),
    "inside.none": ("园区内没有车辆", "Nobody inside"),
    "inside.more": ("另有 {n} 辆未列出", "{n} more not listed"),
    "category": ("类别", "Category"),
    "count": ("数量", "Count"),
    "cat.hazmat": ("危化品", "Hazmat"),
    "cat.hazwaste": ("危废", "Hazardous waste"),
    "cat.engineering": ("工程车", "Engineering"),
    "cat.ordinary": ("普通车", "Ordinary"),
    "cat.emergency": ("应急救援", "Emergency"),
    "cat.unknown": ("未知", "Unknown"),
    "plate": ("车牌", "Plate"),
    "entry-gate": ("入园道口", "Entry gate"),
    "lane": ("车道", "Lane"),
    "entered": ("入园时间", "Entered"),
    "inside-for": ("在园时长", "Inside for"),
    "permit-until": ("许可截止", "Permit until"),
    "overdue": ("超时", "Overdue"),
    "unauthorised": ("未授权", "unauthorised"),
    "limit.permit-end": ("超过许可截止", "past permit end"),
    "limit.dwell-limit": ("超过停留时限", "past dwell limit"),
    "gate": ("道口", "Gate"),
    "gates.title": ("道口状态", "Gates"),
    "gates.none": ("尚无道口数据", "No gate known yet"),
    "online": ("在线", "online"),
    "offline": ("离线", "offline"),
    "never-seen": ("从未上线", "never seen"),
    "stale": ("数据滞后", "stale"),
    "state": ("状态", "State"),
    "last-seen": ("最后联系", "Last seen"),
    "synced-seq": ("已同步序号", "Synced seq"),
    "lag": ("滞后", "Lag"),
    "allowlist": ("名单版本", "Allow-list"),
    "allowlist-age": ("名单更新", "List updated"),
    "mode": ("模式", "Mode"),
    "mode.normal": ("正常", "normal"),
    "mode.incident": ("紧急疏散", "incident"),
    "mode.maintenance": ("维护", "maintenance"),
    "faults": ("故障设备", "Faulted devices"),
    "roll.title": ("疏散点名", "Evacuation roll call"),
    "roll.summary": (
        "园区内 {inside} 辆，其中危化品 {hazmat} 辆、危废 {hazwaste} 辆",
        "{inside} inside: {hazmat} hazmat, {hazwaste} hazardous waste",
    ),
    "roll.print": ("打印点名表", "Print the roll call"),
    "roll.no-incident": (
        "当前没有道口处于紧急疏散模式；以下为园区内车辆。",
        "No gate is in incident mode; these are the vehicles inside.",
    ),
    "events.title": ("事件查询", "Event search"),
    "events.search": ("查询", "Search"),
    "events.from": ("起始时间", "From"),
    "events.to": ("截止时间", "To"),
    "events.type": ("事件类型", "Type"),
    "events.hint": (
        "车牌查询同时匹配一个易混字符的车牌（如 0/D、8/B）；时间为 {zone} 时间。",
        "A plate also matches plates one OCR-confusable character away (0/D, 8/B...); "
        "times are {zone}.",
    ),
    "events.none": ("没有匹配的事件", "No matching event"),
    "events.next": ("下一页", "Next page"),
    "events.scanned": ("已检索 {n} 条事件", "{n} events read"),
    "seq": ("序号", "Seq"),
    "time": ("时间", "Time"),
    "type": ("类型", "Type"),
    "match": ("匹配", "Match"),
    "match.exact": ("精确", "exact"),
    "match.fuzzy": ("易混", "confusable"),
    "data": ("内容", "Data"),
    "overstays.title": ("当前超时车辆", "Overstaying now"),
    "overstays.none": ("当前没有超时车辆", "No vehicle overstaying"),
    "deadline": ("时限", "Deadline"),
    "exceeded": ("超出", "Exceeded by"),
    "proposals.title": ("黑名单提议", "Blacklist proposals"),
    "proposals.none": ("没有黑名单提议", "No blacklist proposals"),
    "proposal": ("编号", "No."),
    "dwell": ("停留", "Dwell"),
    "left": ("已离园", "Left"),
    "decision": ("处理", "Decision"),
    "reason": ("理由", "Reason"),
    "approve": ("批准（加入黑名单）", "Approve (blacklist)"),
    "dismiss": ("驳回", "Dismiss"),
    "prop.open": ("待处理", "open"),
    "prop.approved": ("已批准", "approved"),
    "prop.dismissed": ("已驳回", "dismissed"),
    "not-published": ("{n} 个道口未发布", "not published to {n} gate(s)"),
    "viewer-note": ("查看账号不能处理提议", "Viewer accounts cannot decide proposals"),
    "decided": ("提议 #{id}（{plate}）已{state}", "Proposal #{id} ({plate}) {state}"),
    "reviews.title": ("准入复核", "Admission reviews"),
    "reviews.none": ("没有需要复核的准入", "No admission to review"),
    "credential": ("凭证", "Credential"),
    "revoked-at": ("撤销于", "Revoked at"),
    "decided-at": ("放行于", "Admitted at"),
    "dead.title": ("死信", "Dead letters"),
    "dead.none": ("没有死信", "No dead letters"),
    "received": ("收到", "Received"),
    "source": ("来源", "Source"),
    "size": ("大小", "Size"),
    "dead.dropped": (
        "为控制容量已删除 {n} 封较早的死信",
        "{n} older dead letters deleted to keep within the cap",
    ),
    "error.title": ("出错了", "Something is wrong"),
    "error.back": ("返回园区现况", "Back to the park"),
}


def text(lang: str, key: str, **values: object) -> str:
    """The words of ``key`` in ``lang`` with ``values`` filled in; an unknown key is shown
    as itself (a missing word must not break a page)."""
    pair = WORDS.get(key)
    if pair is None:
        return key.format(**values) if values else key
    word = pair[1] if lang == "en" else pair[0]
    return word.format(**values) if values else word
