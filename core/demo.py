"""The demo dataset: Huaxin Appliances / 华新电器, bilingual, loaded through the core services (idempotent).

Everything is created the way people would create it — as SYSTEM, or as the rep, agent, technician or
customer who would have done it — so every domain rule runs and every event is written. History (a
request opened six weeks ago, a deal won last month) is replayed with a clock set to that moment: the
services stamp "now", so the loader runs a second set of services over the same engine whose clock it
moves through the past. All dates are relative to `core.clock.now()`, and all randomness comes from one
`random.Random(2026)`, so the dataset is the same whenever it is loaded and "ends in 7 days" is always near.
"""

from __future__ import annotations

import contextlib
import random
import time as wallclock
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from core.auth import SYSTEM, Actor
from core.clock import Clock
from core.container import Core, build_core
from core.db.models import (
    Contact,
    Customer,
    DemoMarker,
    Department,
    InstalledProduct,
    KbArticle,
    NotificationPreference,
    Opportunity,
    OutboxEvent,
    Part,
    PartStock,
    Product,
    RepairOrder,
    ServiceRequest,
    ServiceStation,
    Survey,
    Task,
    User,
    Visit,
)
from core.domain.enums import (
    Channel,
    CustomerType,
    DepartmentKind,
    LifecycleStage,
    OpportunityStage,
    RepairStatus,
    RequestKind,
    Role,
    Severity,
    WarrantyType,
)
from core.domain.warranty import WarrantyStatus, add_months, warranty_end
from core.schemas import (
    ContactIn,
    CustomerIn,
    InstalledProductIn,
    KbArticleIn,
    OpportunityIn,
    OpportunityPatch,
    PartUsedIn,
    ProductIn,
    RepairActionIn,
    RepairOrderIn,
    ServiceRequestIn,
    TransitionIn,
    UserIn,
    VisitIn,
)

__all__ = ["DEMO_MARKER", "DemoReport", "load_demo"]

DEMO_MARKER = "demo"
_BASELINE_MARKER = "demo:outbox-after:"
SEED = 2026
TIMEZONE = "Asia/Shanghai"


@dataclass(frozen=True)
class DemoReport:
    """What the demo holds (rows of each kind in the database after loading) and who to try it as."""

    already_loaded: bool
    counts: dict[str, int] = field(default_factory=dict)
    personas: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0


# --- organisation -------------------------------------------------------------------------------

_DEPARTMENTS: tuple[tuple[str, str, DepartmentKind, str | None, str], ...] = (
    # code, name, kind, parent, head
    ("HX", "Huaxin Appliances Group / 华新电器集团", DepartmentKind.GROUP, None, "chen.jing"),
    ("HX-SH", "Shanghai branch / 上海分公司", DepartmentKind.BRANCH, "HX", "zhou.min"),
    ("HX-SH-SALES", "Shanghai sales / 上海销售部", DepartmentKind.DEPARTMENT, "HX-SH", "zhou.min"),
    ("HX-SH-SVC", "Shanghai service / 上海服务部", DepartmentKind.DEPARTMENT, "HX-SH", "sun.li"),
    ("HX-BJ", "Beijing branch / 北京分公司", DepartmentKind.BRANCH, "HX", "ma.jun"),
    ("HX-BJ-SALES", "Beijing sales / 北京销售部", DepartmentKind.DEPARTMENT, "HX-BJ", "ma.jun"),
    ("HX-BJ-SVC", "Beijing service / 北京服务部", DepartmentKind.DEPARTMENT, "HX-BJ", "he.ping"),
)

_STAFF: tuple[tuple[str, Role, str, str | None, str | None, str], ...] = (
    # username, role, name, department, manager, lang — managers come before their reports
    ("admin", Role.ADMIN, "Demo Admin / 系统管理员", None, None, "en"),
    ("chen.jing", Role.MANAGER, "Chen Jing 陈静 (Sales Director)", "HX", None, "en"),
    ("zhou.min", Role.MANAGER, "Zhou Min 周敏 (Shanghai branch manager)", "HX-SH", "chen.jing", "zh"),
    ("ma.jun", Role.MANAGER, "Ma Jun 马军 (Beijing branch manager)", "HX-BJ", "chen.jing", "zh"),
    ("sun.li", Role.MANAGER, "Sun Li 孙丽 (Shanghai service manager)", "HX-SH-SVC", "zhou.min", "en"),
    ("he.ping", Role.MANAGER, "He Ping 何平 (Beijing service manager)", "HX-BJ-SVC", "ma.jun", "zh"),
    ("li.lei", Role.REP, "Li Lei 李雷", "HX-SH-SALES", "zhou.min", "en"),
    ("wu.hao", Role.REP, "Wu Hao 吴昊", "HX-SH-SALES", "zhou.min", "zh"),
    ("emily.chen", Role.REP, "Emily Chen 陈艾米", "HX-SH-SALES", "zhou.min", "en"),
    ("xu.ming", Role.REP, "Xu Ming 徐明", "HX-BJ-SALES", "ma.jun", "zh"),
    ("gao.yan", Role.REP, "Gao Yan 高燕", "HX-BJ-SALES", "ma.jun", "zh"),
    ("james.wood", Role.REP, "James Wood", "HX-BJ-SALES", "ma.jun", "en"),
    ("zhang.wei", Role.TECHNICIAN, "Zhang Wei 张伟", "HX-SH-SVC", "sun.li", "zh"),
    ("zhao.qiang", Role.TECHNICIAN, "Zhao Qiang 赵强", "HX-SH-SVC", "sun.li", "zh"),
    ("lin.tao", Role.TECHNICIAN, "Lin Tao 林涛", "HX-BJ-SVC", "he.ping", "zh"),
    ("guo.feng", Role.TECHNICIAN, "Guo Feng 郭峰", "HX-BJ-SVC", "he.ping", "en"),
    ("liu.yang", Role.AGENT, "Liu Yang 刘洋", "HX-SH-SVC", "sun.li", "en"),
    ("hu.xin", Role.AGENT, "Hu Xin 胡欣", "HX-BJ-SVC", "he.ping", "zh"),
)

# Personas get channel identities so the web chat, the REST channel and `crmbot chat` can act as them.
_PERSONA_IDENTITIES = {
    "wang.fang": "demo-customer",
    "oliver.smith": "demo-customer-en",
    "li.lei": "demo-rep",
    "zhang.wei": "demo-technician",
    "chen.jing": "demo-manager",
    "sun.li": "demo-service-manager",
    "liu.yang": "demo-agent",
    "admin": "demo-admin",
}

_BRANCH = {
    "SH": {"reps": ("li.lei", "wu.hao", "emily.chen"), "manager": "zhou.min", "service_manager": "sun.li",
           "technicians": ("zhang.wei", "zhao.qiang"), "agent": "liu.yang", "station": "ST-SH"},
    "BJ": {"reps": ("xu.ming", "gao.yan", "james.wood"), "manager": "ma.jun", "service_manager": "he.ping",
           "technicians": ("lin.tao", "guo.feng"), "agent": "hu.xin", "station": "ST-BJ"},
}
_TECHNICIAN_STATION = {"zhang.wei": "ST-SH", "zhao.qiang": "ST-SH", "lin.tao": "ST-BJ", "guo.feng": "ST-BJ"}
# What each technician is qualified for (product categories and models): dispatch suggestions rank by it.
_TECHNICIAN_SKILLS: dict[str, tuple[str, ...]] = {
    "zhang.wei": ("washing_machine", "dishwasher", "WM-2023", "WM-3000"),
    "zhao.qiang": ("air_conditioner", "fridge", "AC-350", "AC-900"),
    "lin.tao": ("washing_machine", "water_heater", "WH-800"),
    "guo.feng": ("air_conditioner", "dishwasher", "fridge", "DW-700"),
}

_STATIONS = (
    # code, name, address, department
    ("ST-SH", "Shanghai Minhang service station / 上海闵行服务站",
     "上海市闵行区申富路88号 / 88 Shenfu Rd, Minhang, Shanghai", "HX-SH-SVC"),
    ("ST-BJ", "Beijing Chaoyang service station / 北京朝阳服务站",
     "北京市朝阳区酒仙桥路10号 / 10 Jiuxianqiao Rd, Chaoyang, Beijing", "HX-BJ-SVC"),
)

_PARTS: tuple[tuple[str, str, str], ...] = (
    ("P-100", "Drain pump / 排水泵", "180.00"),
    ("P-110", "Door seal (washing machine) / 门封圈", "95.00"),
    ("P-120", "Heating element / 加热管", "260.00"),
    ("P-130", "Control board / 主控板", "680.00"),
    ("P-140", "Water inlet valve / 进水阀", "75.00"),
    ("P-150", "Compressor start relay / 压缩机启动继电器", "120.00"),
    ("P-160", "Run capacitor (air conditioner) / 空调运行电容", "65.00"),
    ("P-170", "Outdoor fan motor / 室外风机电机", "420.00"),
    ("P-180", "Thermostat / 温控器", "110.00"),
    ("P-190", "Magnesium anode rod / 镁棒", "85.00"),
)
# (quantity, minimum) per station; Beijing's outdoor fan motors are below their minimum on purpose.
_STOCK: dict[str, dict[str, tuple[int, int]]] = {
    "ST-SH": {"P-100": (12, 3), "P-110": (10, 2), "P-120": (9, 2), "P-130": (4, 1), "P-140": (10, 2),
              "P-150": (6, 2), "P-160": (12, 3), "P-170": (3, 1), "P-180": (8, 2), "P-190": (10, 2)},
    "ST-BJ": {"P-100": (10, 3), "P-110": (8, 2), "P-120": (8, 2), "P-130": (3, 1), "P-140": (8, 2),
              "P-150": (6, 2), "P-160": (10, 3), "P-170": (1, 2), "P-180": (8, 2), "P-190": (8, 2)},
}

# --- catalogue ----------------------------------------------------------------------------------

_PRODUCTS: tuple[tuple[str, str, str, int, int | None], ...] = (
    # code, name, category, warranty months, maintenance interval months
    ("WM-2023", "WM-2023 front-load washing machine 8 kg / 滚筒洗衣机", "washing_machine", 24, 12),
    ("WM-3000", "WM-3000 washer-dryer 10 kg / 洗烘一体机", "washing_machine", 36, 12),
    ("DW-500", "DW-500 freestanding dishwasher / 独立式洗碗机", "dishwasher", 24, 12),
    ("DW-700", "DW-700 built-in dishwasher / 嵌入式洗碗机", "dishwasher", 24, 12),
    ("RF-450", "RF-450 fridge freezer / 双门冰箱", "fridge", 36, None),
    ("RF-600", "RF-600 side-by-side fridge / 对开门冰箱", "fridge", 36, None),
    ("AC-350", "AC-350 split air conditioner 1.5 HP / 壁挂式空调", "air_conditioner", 36, 6),
    ("AC-900", "AC-900 ceiling cassette air conditioner / 吸顶式商用空调", "air_conditioner", 24, 6),
    ("WH-800", "WH-800 electric water heater 80 L / 电热水器", "water_heater", 24, 12),
)
_PRODUCT_BY_CODE = {row[0]: row for row in _PRODUCTS}
_UNITS_PER_CUSTOMER = {
    CustomerType.END: (1, 3), CustomerType.INTERMEDIATE: (1, 2), CustomerType.PUBLIC: (2, 4),
}
_SERIAL_FORMAT = {
    "WM-2023": "WM2023-{:05d}", "WM-3000": "WM3000-{:05d}", "DW-500": "DW500-{:05d}",
    "DW-700": "DW700-{:05d}", "RF-450": "RF{:05d}", "RF-600": "RF{:05d}", "AC-350": "AC{:05d}",
    "AC-900": "AC{:05d}", "WH-800": "WH{:05d}",
}
_PRODUCTS_FOR_TYPE = {
    CustomerType.END: ("WM-2023", "WM-2023", "WM-3000", "DW-500", "DW-700", "RF-450", "RF-600", "AC-350",
                       "AC-350", "WH-800"),
    CustomerType.INTERMEDIATE: ("WM-2023", "WM-3000", "DW-500", "DW-700", "RF-450", "RF-600", "AC-350",
                                "WH-800"),
    CustomerType.PUBLIC: ("AC-900", "AC-900", "AC-350", "WH-800", "WH-800", "DW-700", "RF-600"),
}

# --- customers ----------------------------------------------------------------------------------

# name, slug (for e-mail addresses), city, segment, lang, (username, person) of a chat user or None
_CustomerRow = tuple[str, str, str, str, str, tuple[str, str] | None]
_END: tuple[_CustomerRow, ...] = (
    ("王芳", "wang.fang", "SH", "household", "zh", ("wang.fang", "王芳")),
    ("Oliver Smith", "oliver.smith", "SH", "household", "en", ("oliver.smith", "Oliver Smith")),
    ("李秀英", "li.xiuying", "SH", "household", "zh", ("li.xiuying", "李秀英")),
    ("陈思远", "chen.siyuan", "SH", "household", "zh", None),
    ("Sophie Martin", "sophie.martin", "SH", "household", "en", ("sophie.martin", "Sophie Martin")),
    ("黄丽华", "huang.lihua", "SH", "household", "zh", None),
    ("周家小馆", "zhoujia.kitchen", "SH", "small_business", "zh", None),
    ("Lakeside Café", "lakeside.cafe", "SH", "small_business", "en", None),
    ("郑凯", "zheng.kai", "SH", "household", "zh", None),
    ("Lucas Rossi", "lucas.rossi", "SH", "household", "en", None),
    ("何静怡", "he.jingyi", "SH", "household", "zh", ("he.jingyi", "何静怡")),
    ("Green Leaf Bakery", "greenleaf.bakery", "SH", "small_business", "en", None),
    ("杨帆", "yang.fan", "BJ", "household", "zh", ("yang.fan", "杨帆")),
    ("赵雪梅", "zhao.xuemei", "BJ", "household", "zh", None),
    ("Daniel Becker", "daniel.becker", "BJ", "household", "en", ("daniel.becker", "Daniel Becker")),
    ("孙建国", "sun.jianguo", "BJ", "household", "zh", None),
    ("Emma Johnson", "emma.johnson", "BJ", "household", "en", None),
    ("吴佳琪", "wu.jiaqi", "BJ", "household", "zh", None),
    ("老徐面馆", "laoxu.noodles", "BJ", "small_business", "zh", None),
    ("Hutong Courtyard Guesthouse", "hutong.guesthouse", "BJ", "small_business", "en", None),
    ("马丽", "ma.li", "BJ", "household", "zh", ("ma.li", "马丽")),
    ("Anna Kowalski", "anna.kowalski", "BJ", "household", "en", None),
    ("冯磊", "feng.lei", "BJ", "household", "zh", None),
    ("罗记烘焙坊", "luoji.bakery", "BJ", "small_business", "zh", None),
)
_INTERMEDIATE: tuple[_CustomerRow, ...] = (
    ("Acme Appliances Ltd", "acme", "SH", "dealer", "en", ("li.na", "Li Na")),
    ("上海家电城", "sh.appliance.city", "SH", "retail_chain", "zh", ("qian.wei", "钱伟")),
    ("浦东家电连锁有限公司", "pudong.chain", "SH", "retail_chain", "zh", None),
    ("Jade River Distribution Co.", "jaderiver", "SH", "distributor", "en", None),
    ("华东电器批发有限公司", "huadong.wholesale", "SH", "distributor", "zh", None),
    ("Sunrise Home Electronics", "sunrise.home", "SH", "dealer", "en", None),
    ("蓝天家居卖场", "lantian.home", "SH", "dealer", "zh", None),
    ("Pacific Kitchen Supply", "pacific.kitchen", "SH", "kitchen_specialist", "en", None),
    ("新天地厨电专卖", "xintiandi.kitchen", "SH", "kitchen_specialist", "zh", None),
    ("Harbour Retail Group", "harbour.retail", "SH", "retail_chain", "en", None),
    ("金桥电器商行", "jinqiao.electric", "SH", "dealer", "zh", None),
    ("BrightHome Online Store", "brighthome", "SH", "e_commerce", "en", None),
    ("北京京城电器商行", "jingcheng.electric", "BJ", "dealer", "zh", None),
    ("中关村家电广场", "zgc.plaza", "BJ", "retail_chain", "zh", None),
    ("Northern Star Appliances", "northern.star", "BJ", "dealer", "en", ("peter.zhou", "Peter Zhou")),
    ("Great Wall Distributors", "greatwall.dist", "BJ", "distributor", "en", None),
    ("朝阳家电超市", "chaoyang.market", "BJ", "retail_chain", "zh", None),
    ("天坛家电商城", "tiantan.mall", "BJ", "retail_chain", "zh", None),
    ("Capital Appliance Wholesale", "capital.wholesale", "BJ", "distributor", "en", None),
    ("长安电器批发部", "changan.wholesale", "BJ", "distributor", "zh", None),
    ("和平家电专卖店", "heping.store", "BJ", "dealer", "zh", None),
    ("Golden Bridge Trading", "goldenbridge", "BJ", "e_commerce", "en", None),
    ("海淀家电服务中心", "haidian.service", "BJ", "installer", "zh", None),
    ("Summit Home Builders", "summit.builders", "BJ", "developer", "en", None),
)
_PUBLIC: tuple[_CustomerRow, ...] = (
    ("仁济医院", "renji.hospital", "SH", "healthcare", "zh", ("han.mei", "韩梅")),
    ("Shanghai Xuhui No. 2 Kindergarten", "xuhui.kg2", "SH", "education", "en", None),
    ("上海市第六中学", "sh.school6", "SH", "education", "zh", None),
    ("徐汇区社区卫生服务中心", "xuhui.clinic", "SH", "healthcare", "zh", None),
    ("Pudong Senior Care Home", "pudong.care", "SH", "elderly_care", "en", None),
    ("长宁区政府机关食堂", "changning.canteen", "SH", "government", "zh", None),
    ("Minhang District Fire Station", "minhang.fire", "SH", "government", "en", None),
    ("浦东新区图书馆", "pudong.library", "SH", "culture", "zh", None),
    ("Shanghai International School", "sh.intl.school", "SH", "education", "en", None),
    ("静安区养老院", "jingan.care", "SH", "elderly_care", "zh", None),
    ("黄浦区第一小学", "huangpu.primary1", "SH", "education", "zh", None),
    ("临港职业学院后勤处", "lingang.college", "SH", "education", "zh", None),
    ("Beijing No. 4 Middle School", "bj.school4", "BJ", "education", "zh", ("liang.hui", "梁辉")),
    ("北京第十二中学", "bj.school12", "BJ", "education", "zh", None),
    ("朝阳区人民医院", "chaoyang.hospital", "BJ", "healthcare", "zh", None),
    ("Haidian District Nursing Home", "haidian.care", "BJ", "elderly_care", "en", None),
    ("北京铁路职工食堂", "bj.rail.canteen", "BJ", "government", "zh", None),
    ("东城区政务服务中心", "dongcheng.gov", "BJ", "government", "zh", None),
    ("Beijing International Hospital", "bj.intl.hospital", "BJ", "healthcare", "en", None),
    ("海淀区实验小学", "haidian.primary", "BJ", "education", "zh", None),
    ("西城区消防救援站", "xicheng.fire", "BJ", "government", "zh", None),
    ("北京体育学院宿舍服务中心", "bj.sport.dorm", "BJ", "education", "zh", None),
    ("丰台区社区卫生服务中心", "fengtai.clinic", "BJ", "healthcare", "zh", None),
    ("Beijing Capital Library Annex", "capital.library", "BJ", "culture", "en", None),
)
# Prospects: known to sales, nothing delivered yet.
_PROSPECTS = frozenset({"Harbour Retail Group", "Shanghai International School",
                        "Beijing Capital Library Annex"})
# Key public accounts the branch managers look after themselves.
_MANAGER_OWNED = {"仁济医院": "zhou.min", "朝阳区人民医院": "ma.jun"}
_FIXED_OWNER = {"Acme Appliances Ltd": "li.lei", "上海家电城": "li.lei", "王芳": "li.lei",
                "Oliver Smith": "emily.chen"}
_FIXED_CONTACTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    # customer → (name, title, lang); the first is the one the chat user is
    "Acme Appliances Ltd": (("Li Na", "Purchasing manager", "en"), ("Tom Baker", "Owner", "en"),
                            ("钱小红", "售后主管", "zh")),
}

_ZH_PEOPLE = (
    ("王磊", "wang.lei"), ("刘敏", "liu.min"), ("陈晨", "chen.chen"), ("杨静", "yang.jing"),
    ("赵刚", "zhao.gang"), ("黄磊", "huang.lei"), ("周涛", "zhou.tao"), ("吴敏", "wu.min"),
    ("徐丽", "xu.li"), ("孙浩", "sun.hao"), ("胡军", "hu.jun"), ("朱红", "zhu.hong"),
    ("高峰", "gao.feng"), ("林娜", "lin.na"), ("何勇", "he.yong"), ("郭静", "guo.jing"),
    ("马超", "ma.chao"), ("罗平", "luo.ping"), ("梁燕", "liang.yan"), ("宋杰", "song.jie"),
    ("郑霞", "zheng.xia"), ("谢斌", "xie.bin"), ("韩雪", "han.xue"), ("唐亮", "tang.liang"),
    ("冯婷", "feng.ting"), ("于洋", "yu.yang"), ("董鑫", "dong.xin"), ("萧然", "xiao.ran"),
    ("程琳", "cheng.lin"), ("曹勇", "cao.yong"),
)
_EN_PEOPLE = (
    ("Grace Lee", "grace.lee"), ("Michael Brown", "michael.brown"), ("Sarah Wilson", "sarah.wilson"),
    ("David Miller", "david.miller"), ("Laura Davis", "laura.davis"), ("Hannah Clark", "hannah.clark"),
    ("Ryan Walker", "ryan.walker"), ("Chloe Turner", "chloe.turner"), ("Mark Evans", "mark.evans"),
    ("Nina Patel", "nina.patel"), ("Jack Hughes", "jack.hughes"), ("Olivia King", "olivia.king"),
    ("Sam Carter", "sam.carter"), ("Ella Scott", "ella.scott"), ("Ben Foster", "ben.foster"),
)
_TITLES: dict[str, tuple[tuple[str, str], ...]] = {
    "household": (("Homeowner", "业主"), ("Family member", "家属")),
    "small_business": (("Owner", "店主"), ("Manager", "经理"), ("Head chef", "厨师长")),
    "intermediate": (("Purchasing manager", "采购经理"), ("Store manager", "店长"), ("Owner", "老板"),
                     ("After-sales lead", "售后主管")),
    "public": (("Facilities manager", "后勤主任"), ("Procurement officer", "采购专员"),
               ("Head of logistics", "总务处长"), ("Canteen manager", "食堂经理")),
}
_STREETS = {
    "SH": (("浦东新区张杨路", "Zhangyang Rd, Pudong"), ("徐汇区漕溪北路", "North Caoxi Rd, Xuhui"),
           ("静安区南京西路", "West Nanjing Rd, Jing'an"), ("长宁区虹桥路", "Hongqiao Rd, Changning"),
           ("闵行区七莘路", "Qixin Rd, Minhang"), ("黄浦区淮海中路", "Middle Huaihai Rd, Huangpu"),
           ("杨浦区国定路", "Guoding Rd, Yangpu"), ("普陀区曹杨路", "Caoyang Rd, Putuo")),
    "BJ": (("朝阳区建国路", "Jianguo Rd, Chaoyang"), ("海淀区中关村大街", "Zhongguancun St, Haidian"),
           ("东城区东直门内大街", "Dongzhimennei St, Dongcheng"),
           ("西城区西单北大街", "North Xidan St, Xicheng"),
           ("丰台区丰台路", "Fengtai Rd, Fengtai"), ("石景山区石景山路", "Shijingshan Rd, Shijingshan")),
}
_CITY = {"SH": ("上海市", "Shanghai", "21"), "BJ": ("北京市", "Beijing", "10")}

# --- knowledge base -----------------------------------------------------------------------------

# code, lang, product, category, title, symptoms, solution
_KB: tuple[tuple[str, str, str | None, str, str, str, str], ...] = (
    ("KB-WM-E21", "en", "WM-2023", "washing_machine/errors",
     "Washing machine error E21: water does not drain",
     "E21 on the display. Water stays in the drum after the wash and the cycle stops before spinning; the "
     "pump may hum.",
     "1. Switch off and unplug the machine. 2. Open the small flap at the front bottom right, put a flat "
     "tray and a towel below and let the remaining water out through the emergency hose. 3. Unscrew the "
     "drain filter and remove lint, coins, hair clips and buttons. 4. Check the drain hose is not kinked and "
     "its end is no higher than 100 cm. 5. Restart with Rinse + Spin. If E21 comes back the drain pump (part "
     "P-100) is probably faulty: book a repair."),
    ("KB-WM-LEAK", "en", "WM-2023", "washing_machine/leaks",
     "Washing machine leaking water from the bottom",
     "Water on the floor under or in front of the washing machine; a puddle after every wash; dripping from "
     "the door.",
     "1. Check the door seal (rubber gasket) for tears, hair or a trapped sock and wipe it clean. 2. Make "
     "sure the detergent drawer is not clogged; use low-foam detergent and no more than the dose. 3. Tighten "
     "the inlet hose at the tap and at the back of the machine. 4. Check the drain filter cap is screwed in "
     "fully. A torn door seal must be replaced (part P-110): book a technician."),
    ("KB-WM-NOISE", "en", "WM-2023", "washing_machine/noise",
     "Washing machine bangs loudly or shakes during spin",
     "Loud banging, strong vibration or the machine walking across the floor during the spin cycle.",
     "1. On a new installation remove all four transport bolts from the back. 2. Level the machine: adjust "
     "the feet until it does not rock, then lock the nuts. 3. Don't spin one heavy item (a bath mat, a "
     "duvet) alone; add towels to balance the load. If it still bangs, the shock absorbers may be worn: book "
     "a repair."),
    ("KB-WM-E30", "en", "WM-2023", "washing_machine/errors",
     "Washing machine error E30: door lock fault",
     "E30 on the display; the door does not lock and the wash does not start, or the door stays locked after "
     "the cycle.",
     "Close the door firmly until it clicks and check nothing is caught in the seal. Switch off for 2 "
     "minutes and try again. If the door stays locked, wait 3 minutes, then pull the emergency release cord "
     "behind the drain flap. If E30 repeats the door lock needs replacing: book a repair."),
    ("KB-WM-E10", "en", "WM-2023", "washing_machine/errors",
     "Washing machine error E10: no water coming in",
     "E10 on the display; the drum stays dry, the machine hums and does not fill; the wash takes very long.",
     "Check the tap is fully open and there is water pressure; check the inlet hose is not kinked; close the "
     "tap, unscrew the hose at the machine and clean the small mesh filter. If tap and filter are fine, the "
     "water inlet valve (part P-140) is faulty: book a repair."),
    ("KB-WM-SMELL", "en", "WM-2023", "washing_machine/cleaning",
     "Musty smell from the washing machine",
     "Bad, musty smell from the drum or the laundry; black spots on the door seal.",
     "Run the Drum Clean programme (or an empty 90 °C wash with a cup of white vinegar) once a month, leave "
     "the door and the detergent drawer open after washing, clean the drain filter and wipe the door seal "
     "dry."),
    ("KB-WM3000-DRY", "en", "WM-3000", "washing_machine/drying",
     "Washer-dryer does not dry: clothes still damp",
     "Clothes come out damp after the drying programme; drying runs much longer than usual.",
     "Dry at most half the washing load (5 kg on the WM-3000), clean the lint filter after every drying "
     "cycle and keep the water tap open (the condenser uses cold water). If the drum stays cold the heater "
     "has failed: book a repair."),
    ("KB-DW-E13", "en", "DW-500", "dishwasher/errors",
     "Dishwasher error E13: water not heating",
     "Error E13 on the display. Dishes washed in cold water, greasy dishes, the cycle takes much longer than "
     "usual.",
     "1. Check the programme: Quick and Eco 40 hardly heat. 2. Reset the dishwasher: switch off at the wall "
     "for one minute, then run the Intensive programme. 3. Clean the filters at the bottom of the tub; a "
     "blocked filter makes the heater cut out. If E13 appears again the heating element (part P-120) or its "
     "thermal fuse has failed: book a repair visit."),
    ("KB-DW-E24", "en", "DW-500", "dishwasher/errors",
     "Dishwasher error E24: water does not drain",
     "E24 on the display; dirty water left in the bottom of the dishwasher after the programme.",
     "Switch off, remove and rinse the filter assembly, check the drain hose is not kinked and the sink trap "
     "connection is open (new sinks often have a sealed knock-out), then run Rinse. If E24 returns the drain "
     "pump (part P-100) needs checking: book a repair."),
    ("KB-DW-E15", "en", "DW-500", "dishwasher/leaks",
     "Dishwasher error E15: water in the base (leak protection)",
     "E15 on the display, the drain pump runs all the time, water on the floor or in the base tray.",
     "Switch off and close the tap. Tilt the dishwasher gently backwards so the base tray drains, then dry "
     "it. Use real dishwasher detergent: washing-up liquid foams over. Check the door seal and the inlet "
     "hose. If E15 comes back a hose or the inlet valve (part P-140) is leaking: book a repair."),
    ("KB-DW-E22", "en", "DW-500", "dishwasher/errors",
     "Dishwasher error E22: filter blocked",
     "E22 on the display; water drains slowly; food residue left on the dishes.",
     "Take out the cylindrical and the flat mesh filter, rinse them and brush off grease, clear the spray "
     "arm holes with a toothpick and refit everything firmly. Scrape plates before loading."),
    ("KB-DW-SPOTS", "en", "DW-500", "dishwasher/cleaning",
     "White spots or film on glasses after washing",
     "Glasses and dishes come out with white spots, streaks or a cloudy film.",
     "Refill rinse aid and dishwasher salt, set the water hardness for your area (Shanghai and Beijing water "
     "is hard: level 4–5) and don't overdose the detergent."),
    ("KB-DW700-START", "en", "DW-700", "dishwasher/power",
     "Built-in dishwasher does not start",
     "Nothing happens when pressing Start; lights flash; the door is closed.",
     "Check the child lock (hold Lock for 3 seconds), close the door until it clicks (the cabinet door must "
     "not block it), check the fuse or breaker and wait for a delayed start to finish. If the display stays "
     "dark, book a repair."),
    ("KB-RF-COOL", "en", "RF-450", "fridge/cooling",
     "Fridge not cooling enough",
     "Fridge compartment warm, food spoiling, the compressor clicks on and off.",
     "Set the fridge to 4 °C and the freezer to -18 °C, leave 10 cm of space behind and above it, don't "
     "block the air vents with food, vacuum the condenser coils and check the door seals. If the compressor "
     "clicks but does not run the compressor start relay (part P-150) is faulty: book a repair."),
    ("KB-RF-FROST", "en", "RF-450", "fridge/frost",
     "Heavy frost or ice build-up in the freezer",
     "Thick ice on the back wall of the freezer, drawers stuck, the fridge section gets warm.",
     "Check the door seal is clean and closes, don't put warm food in, and defrost fully (switch off, door "
     "open for 4 hours, towels on the floor). If frost returns within days the defrost thermostat (part "
     "P-180) has failed: book a repair."),
    ("KB-RF-F03", "en", "RF-600", "fridge/errors",
     "Fridge error F03: temperature sensor fault",
     "F03 flashing on the door display; temperatures wrong or the alarm beeping.",
     "Switch the fridge off at the wall for 10 minutes and on again. If F03 remains a temperature sensor is "
     "faulty: keep the doors closed (food stays cold for about 4 hours) and book a repair."),
    ("KB-RF-NOISE", "en", "RF-600", "fridge/noise",
     "Fridge humming or buzzing loudly",
     "Loud humming, buzzing or rattling from the fridge, especially at night.",
     "Level the fridge, keep it 2 cm away from the wall and cabinets and check nothing rests on the back. "
     "Gurgling and clicking are normal; a constant loud buzz from the back is not: book a repair."),
    ("KB-AC-COOL", "en", "AC-350", "air_conditioner/cooling",
     "Air conditioner not cooling, blowing warm air",
     "The air conditioner runs but blows warm air; the room does not cool down; the outdoor fan does not "
     "turn.",
     "1. Check the remote is in Cool mode and set below room temperature. 2. Clean the indoor filters (every "
     "two weeks in summer). 3. Clear leaves around the outdoor unit. 4. Check the outdoor fan turns after 3 "
     "minutes. If the fan or compressor does not start, the run capacitor (part P-160) is usually at fault: "
     "book a repair."),
    ("KB-AC-LEAK", "en", "AC-350", "air_conditioner/leaks",
     "Air conditioner indoor unit dripping water",
     "Water dripping from the indoor unit onto the wall or the floor while cooling.",
     "The condensate drain is blocked or the unit is not level. Clean the filters, check the drain hose "
     "outside is not kinked or pointing up, and pour a cup of water into the drip tray to test. If it still "
     "drips, book a technician."),
    ("KB-AC-E5", "en", "AC-350", "air_conditioner/errors",
     "Air conditioner error E5: over-current protection",
     "The air conditioner stops after a few minutes and shows E5; sometimes the breaker trips.",
     "Switch off at the breaker for 5 minutes, clean the filters and the outdoor coil, give the outdoor unit "
     "airflow and don't run it on an extension lead. If E5 repeats, book a repair."),
    ("KB-AC900-E4", "en", "AC-900", "air_conditioner/errors",
     "Cassette air conditioner error E4: low refrigerant",
     "The cassette unit shows E4, cooling is weak, ice forms on the outdoor unit's pipes.",
     "This usually means a refrigerant leak. Switch the unit off to protect the compressor and book a "
     "certified technician; never recharge refrigerant yourself."),
    ("KB-WH-F05", "en", "WH-800", "water_heater/errors",
     "Water heater error F05: dry-heating protection, no hot water",
     "F05 on the water heater display; no hot water; the heater switched itself off.",
     "F05 means the tank heated without enough water. Switch off the power, open a hot tap and the cold "
     "inlet valve until water flows steadily, then switch on again. If F05 returns with a full tank the "
     "heating element (part P-120) or the sensor is faulty: book a repair."),
    ("KB-WH-SMELL", "en", "WH-800", "water_heater/maintenance",
     "Water heater: rusty water or a bad smell",
     "Brown or rusty hot water, a rotten-egg smell, noisy heating.",
     "The magnesium anode rod is used up. Replace it every 2 years (part P-190) and flush the tank: book a "
     "maintenance visit."),
    ("KB-WH-E2", "en", "WH-800", "water_heater/errors",
     "Water heater error E2: over-temperature",
     "E2 on the display, very hot water then none; the safety thermostat cuts out.",
     "Lower the set temperature to 60 °C, switch off for 10 minutes and press reset. If E2 repeats the "
     "thermostat (part P-180) is faulty: book a repair."),
    ("KB-GEN-WARRANTY", "en", None, "general/warranty",
     "What the warranty covers and what repairs cost after it ends",
     "Is my appliance still under warranty? Warranty check, extended warranty, out-of-warranty repair cost.",
     "Standard warranty from the date of sale: washing machines, dishwashers, commercial air conditioners "
     "and water heaters 24 months; washer-dryers, fridges and split air conditioners 36 months. Extended "
     "warranties add 24 months. In warranty, parts and labour are free (except misuse). After it ends you "
     "pay parts at list price, labour at CNY 120 per hour (30 minutes minimum) and a CNY 50 call-out fee."),
    ("KB-GEN-BOOK", "en", None, "general/service",
     "How to book a repair visit",
     "I need a technician, book a repair, schedule a visit.",
     "Tell the assistant which appliance (the serial number on the label, or just \"my washing machine\"), "
     "what is wrong and when you are at home. You get a reference SR-n, a message when a technician is "
     "assigned and on the way, and a short survey afterwards."),
    ("KB-WM-E21-ZH", "zh", "WM-2023", "washing_machine/errors",
     "洗衣机显示E21：不排水",
     "显示屏出现E21，洗完后桶内有积水，程序在脱水前停止，排水泵有嗡嗡声。",
     "1. 关机并拔掉电源。2. 打开机器前面右下角的小盖板，下面放托盘和毛巾，用应急排水管放掉余水。3. 拧下排水过"
     "滤器，清除线头、硬币、发夹和纽扣。4. 检查排水管没有弯折，出水口高度不超过100厘米。5. 选择“漂洗+脱水”重"
     "新运行。如仍显示E21，排水泵（配件P-100）可能损坏，请预约上门维修。"),
    ("KB-WM-LEAK-ZH", "zh", "WM-2023", "washing_machine/leaks",
     "洗衣机底部漏水",
     "洗衣机下面或前面地上有水，每次洗衣后都有一滩水，门口滴水。",
     "1. 检查门封圈（橡胶密封圈）是否破损、夹有头发或袜子，并擦拭干净。2. 确认洗衣液盒没有堵塞，使用低泡洗衣"
     "液且不要过量。3. 拧紧水龙头和机器背面的进水管接头。4. 检查排水过滤器盖是否拧紧。门封圈破损需要更换（配"
     "件P-110），请预约师傅上门。"),
    ("KB-WM-NOISE-ZH", "zh", "WM-2023", "washing_machine/noise",
     "洗衣机脱水时撞击声大、晃动",
     "脱水时有很大的撞击声，机器剧烈震动甚至移位。",
     "1. 新机安装时请拆除背面四个运输螺栓。2. 调节机脚直到机器不晃动，然后锁紧螺母。3. 不要单独脱水一件厚重衣"
     "物，可加几条毛巾平衡。仍有撞击声可能是减震器磨损，请预约维修。"),
    ("KB-WM-E10-ZH", "zh", "WM-2023", "washing_machine/errors",
     "洗衣机显示E10：不进水",
     "显示E10，桶内没有水，机器嗡嗡响但不进水，洗衣时间很长。",
     "检查水龙头是否完全打开、家中是否有水压，进水管是否弯折；关闭水龙头，拧下机器端的进水管，清洗进水口的小"
     "滤网。如果水龙头和滤网都正常，进水阀（配件P-140）损坏，请预约维修。"),
    ("KB-WM-E30-ZH", "zh", "WM-2023", "washing_machine/errors",
     "洗衣机显示E30：门锁故障",
     "显示E30，门锁不上无法启动，或者洗完后门一直打不开。",
     "用力关门直到听到“咔嗒”声，检查门封处没有夹住衣物；断电2分钟后重试。门打不开时等待3分钟，再拉动排水盖板"
     "后的应急开门拉绳。反复出现E30需要更换门锁，请预约维修。"),
    ("KB-DW-E13-ZH", "zh", "DW-500", "dishwasher/errors",
     "洗碗机显示E13：水不加热",
     "显示屏出现E13，洗碗水是凉的，碗碟油腻，程序时间比平时长很多。",
     "1. 检查程序：快洗和节能40度几乎不加热。2. 复位：断电1分钟后选择强力程序运行。3. 清洗底部过滤网，过滤网"
     "堵塞会导致加热停止。如果再次出现E13，加热管（配件P-120）或温度保险丝已损坏，请预约上门维修。"),
    ("KB-DW-E24-ZH", "zh", "DW-500", "dishwasher/errors",
     "洗碗机显示E24：不排水",
     "显示E24，程序结束后洗碗机底部有脏水。",
     "断电，取出并冲洗过滤网组件，检查排水管没有弯折、水槽下水接口已打通（新水槽常有封堵片），然后运行漂洗程"
     "序。仍显示E24需要检查排水泵（配件P-100），请预约维修。"),
    ("KB-DW-E15-ZH", "zh", "DW-500", "dishwasher/leaks",
     "洗碗机显示E15：底座有水（防漏水保护）",
     "显示E15，排水泵一直运转，地上或底盘里有水，洗碗机漏水。",
     "断电并关闭水龙头，将洗碗机轻轻向后倾斜让底盘里的水流出并擦干。请使用洗碗机专用洗涤剂，普通洗洁精会起泡"
     "溢出。检查门封和进水管接头。E15反复出现说明水管或进水阀（配件P-140）漏水，请预约维修。"),
    ("KB-DW-SPOTS-ZH", "zh", "DW-500", "dishwasher/cleaning",
     "洗碗后玻璃杯有白色水渍",
     "玻璃杯和碗碟洗后有白点、水痕或一层白膜。",
     "补充光亮剂和软水盐，按当地水质设置硬度（上海、北京水质较硬，设为4–5档），洗涤剂不要过量。"),
    ("KB-RF-COOL-ZH", "zh", "RF-450", "fridge/cooling",
     "冰箱不制冷",
     "冷藏室不冷，食物变质，压缩机反复咔哒启停。",
     "冷藏室设为4°C、冷冻室设为-18°C，冰箱背面和顶部留出10厘米散热空间，不要用食物堵住出风口，清洁背面冷凝器"
     "并检查门封。压缩机咔哒响但不运转，多为压缩机启动继电器（配件P-150）故障，请预约维修。"),
    ("KB-RF-FROST-ZH", "zh", "RF-450", "fridge/frost",
     "冰箱冷冻室结霜严重",
     "冷冻室后壁结厚冰，抽屉拉不开，冷藏室变暖。",
     "检查门封是否干净、关严，不要放入热的食物，彻底除霜（断电开门4小时，地上垫毛巾）。几天内又结霜说明化霜温"
     "控器（配件P-180）损坏，请预约维修。"),
    ("KB-RF-F03-ZH", "zh", "RF-600", "fridge/errors",
     "冰箱显示F03：温度传感器故障",
     "门上显示屏闪烁F03，温度不准或报警鸣响。",
     "断电10分钟后重新通电。仍显示F03说明温度传感器故障：尽量不开门（食物可保冷约4小时），并预约维修。"),
    ("KB-AC-COOL-ZH", "zh", "AC-350", "air_conditioner/cooling",
     "空调不制冷、吹热风",
     "空调运行但吹热风，房间降不了温，室外机风扇不转。",
     "1. 确认遥控器为制冷模式且设定温度低于室温。2. 清洗室内机滤网（夏季每两周一次）。3. 清理室外机周围的杂物"
     "。4. 开机3分钟后检查室外风扇是否转动。风扇或压缩机不启动多为运行电容（配件P-160）故障，请预约维修。"),
    ("KB-AC-LEAK-ZH", "zh", "AC-350", "air_conditioner/leaks",
     "空调内机滴水",
     "制冷时室内机往墙上或地上滴水。",
     "冷凝水排水管堵塞或内机不水平。清洗滤网，检查室外的排水管没有弯折或朝上，往接水盘倒一杯水测试。仍滴水请"
     "预约师傅疏通。"),
    ("KB-AC-E5-ZH", "zh", "AC-350", "air_conditioner/errors",
     "空调显示E5：过流保护",
     "空调运行几分钟后停机并显示E5，有时空气开关跳闸。",
     "断开空气开关5分钟，清洗滤网和室外机冷凝器，保证室外机通风，不要使用插线板供电。E5反复出现请预约维修。"),
    ("KB-WH-F05-ZH", "zh", "WH-800", "water_heater/errors",
     "热水器显示F05：防干烧保护，没有热水",
     "热水器显示F05，没有热水，热水器自动断电。",
     "F05表示内胆缺水加热。断电后打开热水龙头和冷水进水阀，直到热水龙头稳定出水（内胆已满），再通电。满水仍显"
     "示F05，加热管（配件P-120）或传感器故障，请预约维修。"),
    ("KB-WH-SMELL-ZH", "zh", "WH-800", "water_heater/maintenance",
     "热水器出水发黄、有异味",
     "热水发黄带锈，有臭鸡蛋味，加热时有响声。",
     "镁棒已消耗完。镁棒应每2年更换一次（配件P-190）并清洗内胆，请预约保养上门。"),
    ("KB-GEN-WARRANTY-ZH", "zh", None, "general/warranty",
     "保修范围及保修期后的维修费用",
     "我的电器还在保修期吗？保修查询、延保、过保维修收费。",
     "自购买之日起标准保修：洗衣机、洗碗机、商用空调和热水器24个月，洗烘一体机、冰箱和壁挂空调36个月；延保再"
     "加24个月。保修期内配件和人工免费（人为损坏除外）。过保后配件按价目表收费，人工每小时120元（最少30分钟）"
     "，另收上门费50元。"),
)


@dataclass(frozen=True, slots=True)
class _Fault:
    """A kind of case customers open, in both languages, and what fixing it takes."""

    en: str
    zh: str
    en_detail: str
    zh_detail: str
    kb: str | None
    parts: tuple[str, ...]
    labour: int
    en_fix: str
    zh_fix: str


_FAULTS: dict[str, tuple[_Fault, ...]] = {
    "washing_machine": (
        _Fault("Washing machine leaking from the bottom", "洗衣机底部漏水",
               "A puddle under the machine after every wash.", "每次洗完衣服机器下面都有一滩水。",
               "KB-WM-LEAK", ("P-110",), 60,
               "Replaced the torn door seal (P-110); full test cycle without leaks.",
               "更换破损的门封圈（P-110），完整测试一个程序无漏水。"),
        _Fault("Washing machine shows E21 and does not drain", "洗衣机显示E21，不排水",
               "Water stays in the drum and E21 is on the display.", "桶里一直有水，显示E21。",
               "KB-WM-E21", ("P-100",), 45,
               "Replaced the drain pump (P-100); drains normally.",
               "更换排水泵（P-100），排水正常。"),
        _Fault("Loud banging during the spin cycle", "脱水时撞击声很大",
               "The machine bangs and moves across the floor when spinning.", "脱水时机器撞击并移位。",
               "KB-WM-NOISE", (), 40,
               "Removed a forgotten transport bolt and levelled the feet; spin is quiet.",
               "拆除遗留的运输螺栓并调平机脚，脱水安静。"),
        _Fault("No water coming in, error E10", "洗衣机不进水，显示E10",
               "The drum stays dry and the machine shows E10.", "桶里不进水，显示E10。",
               "KB-WM-E10", ("P-140",), 35,
               "Replaced the water inlet valve (P-140).",
               "更换进水阀（P-140）。"),
    ),
    "dishwasher": (
        _Fault("Dishwasher error E13, water not heating", "洗碗机显示E13，水不热",
               "Dishes come out greasy and E13 is on the display.", "碗洗不干净，显示E13。",
               "KB-DW-E13", ("P-120",), 50,
               "Replaced the heating element (P-120); water heats to 65 °C.",
               "更换加热管（P-120），水温可达65°C。"),
        _Fault("Dishwasher not draining, error E24", "洗碗机不排水，报E24",
               "Dirty water left at the bottom, E24 on the display.", "底部有脏水，显示E24。",
               "KB-DW-E24", ("P-100",), 45,
               "Replaced the blocked drain pump (P-100).",
               "更换堵塞的排水泵（P-100）。"),
        _Fault("Dishwasher shows E15, water under the unit", "洗碗机报E15，底部有水",
               "E15 on the display and water in the base.", "显示E15，底座有水。",
               "KB-DW-E15", ("P-140",), 60,
               "Replaced the leaking inlet valve (P-140) and dried the base tray.",
               "更换漏水的进水阀（P-140），擦干底盘。"),
    ),
    "fridge": (
        _Fault("Fridge not cooling", "冰箱不制冷",
               "The fridge compartment is warm and food is spoiling.", "冷藏室不冷，食物变质。",
               "KB-RF-COOL", ("P-150",), 50,
               "Replaced the compressor start relay (P-150); 4 °C reached in two hours.",
               "更换压缩机启动继电器（P-150），两小时内降到4°C。"),
        _Fault("Heavy frost in the freezer", "冷冻室结霜严重",
               "Thick ice on the back wall, drawers stuck.", "后壁结厚冰，抽屉拉不开。",
               "KB-RF-FROST", ("P-180",), 60,
               "Replaced the defrost thermostat (P-180) and defrosted the freezer.",
               "更换化霜温控器（P-180）并完成除霜。"),
        _Fault("Fridge display shows F03", "冰箱显示F03",
               "F03 flashes on the door display.", "门上显示屏闪烁F03。",
               "KB-RF-F03", (), 30,
               "Reseated a loose sensor connector; F03 cleared.",
               "重新插紧松动的传感器插头，F03消除。"),
    ),
    "air_conditioner": (
        _Fault("Air conditioner blows warm air", "空调不制冷，吹热风",
               "The room does not cool down and the outdoor fan does not turn.",
               "房间降不了温，室外风扇不转。",
               "KB-AC-COOL", ("P-160",), 40,
               "Replaced the run capacitor (P-160); cooling restored.",
               "更换运行电容（P-160），制冷恢复。"),
        _Fault("Air conditioner indoor unit dripping water", "空调内机滴水",
               "Water drips onto the wall while cooling.", "制冷时往墙上滴水。",
               "KB-AC-LEAK", (), 45,
               "Cleared the blocked condensate drain pipe.",
               "疏通堵塞的冷凝水排水管。"),
        _Fault("Air conditioner stops with error E5", "空调报E5后停机",
               "It stops after a few minutes and shows E5.", "运行几分钟后停机并显示E5。",
               "KB-AC-E5", (), 40,
               "Cleaned the outdoor coil and tightened the power terminal; no more E5.",
               "清洗室外冷凝器并紧固电源端子，不再报E5。"),
    ),
    "water_heater": (
        _Fault("Water heater shows F05, no hot water", "热水器显示F05，没有热水",
               "No hot water since this morning, F05 on the display.", "今天早上开始没有热水，显示F05。",
               "KB-WH-F05", ("P-120",), 50,
               "Replaced the heating element (P-120) and refilled the tank.",
               "更换加热管（P-120）并重新注满内胆。"),
        _Fault("Rusty water and a bad smell from the water heater", "热水器出水发黄有异味",
               "Hot water is brown and smells.", "热水发黄并有异味。",
               "KB-WH-SMELL", ("P-190",), 40,
               "Replaced the anode rod (P-190) and flushed the tank.",
               "更换镁棒（P-190）并清洗内胆。"),
        _Fault("Water heater error E2, overheating", "热水器显示E2，温度过高",
               "Very hot water, then none; E2 on the display.", "先是水很烫，然后没有热水，显示E2。",
               "KB-WH-E2", ("P-180",), 35,
               "Replaced the thermostat (P-180).",
               "更换温控器（P-180）。"),
    ),
}
_COMPLAINTS: tuple[_Fault, ...] = (
    _Fault("Technician was two hours late and rude", "维修师傅迟到两个小时，态度很差",
           "Nobody called to say he would be late, and he was rude when he arrived.",
           "师傅迟到也没有提前打电话，到了之后态度也不好。",
           None, (), 0,
           "Apologised, refunded the call-out fee and coached the technician.",
           "已向客户致歉，退还上门费，并对师傅进行了培训。"),
    _Fault("Same fault came back a week after the repair", "维修后一周又出现同样故障",
           "It was repaired last week and the same problem is back.", "上周刚修好，现在又出现同样的问题。",
           None, (), 0,
           "Senior technician replaced the faulty part free of charge; follow-up call in two weeks.",
           "高级技师免费更换故障配件，两周后电话回访。"),
    _Fault("Charged for a repair that should be under warranty", "保修期内维修却被收费",
           "My appliance is in warranty but I was asked to pay.", "我的电器还在保修期内，却被要求付费。",
           None, (), 0,
           "Checked the warranty: in warranty. Refunded the charge in full.",
           "核实仍在保修期内，已全额退款。"),
    _Fault("Nobody called back about my request", "报修后一直没人回电话",
           "I reported a fault three days ago and nobody has called.", "三天前报修，到现在没有人联系我。",
           None, (), 0,
           "Called the customer, booked a visit for the next morning and apologised for the delay.",
           "已致电客户道歉，并预约第二天上午上门。"),
    _Fault("Delivery team scratched the new appliance", "送货时把新电器划伤了",
           "The side panel was scratched during delivery.", "送货时侧板被划伤。",
           None, (), 0,
           "Replaced the side panel and gave a CNY 200 voucher.",
           "已更换侧板并赠送200元代金券。"),
    _Fault("Installer left water all over the floor", "安装师傅把地上弄得全是水",
           "After installation the kitchen floor was flooded.", "安装完厨房地上全是水。",
           None, (), 0,
           "Team leader apologised and paid for cleaning; installer retrained on the checklist.",
           "组长上门致歉并承担清洁费用，安装师傅重新培训。"),
)


@dataclass(frozen=True, slots=True)
class _CaseRow:
    """One scripted service case: how far it got, and what it takes to get there."""

    path: str
    kind: RequestKind
    severity: Severity
    days_ago: float
    by_customer: bool
    survey: int | None = None  # None: no survey; 0: sent, not answered; 1–5: the answer
    warranty: str | None = None  # "in" / "out" of warranty when the case was opened
    customer: str | None = None
    serial: str | None = None
    technician: str | None = None
    fault: int | None = None


_R, _C = RequestKind.REQUEST, RequestKind.COMPLAINT
_LOW, _MED, _HIGH, _CRIT = Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL
_CASES: tuple[_CaseRow, ...] = (
    # new
    _CaseRow("new", _R, _LOW, 0.1, True),
    _CaseRow("new", _R, _MED, 0.3, False),
    _CaseRow("new", _R, _HIGH, 0.8, True),
    _CaseRow("new", _C, _MED, 0.2, True),
    _CaseRow("new", _R, _CRIT, 1.5, False),
    # assigned
    _CaseRow("dispatch_live", _R, _HIGH, 0.9, False, technician="zhang.wei"),
    _CaseRow("accepted_today", _R, _MED, 1.2, True, customer="CUS-0002", serial="AC19876",
             technician="zhang.wei",
             fault=0),
    _CaseRow("dispatch", _R, _MED, 1.8, False),
    _CaseRow("accepted", _R, _LOW, 1.5, False),
    _CaseRow("assign_agent", _R, _LOW, 0.5, True),
    _CaseRow("assign_manager", _C, _LOW, 1.0, False),
    # in progress
    _CaseRow("ro_started", _R, _HIGH, 1.6, False, technician="zhang.wei"),
    _CaseRow("ro_started", _R, _MED, 3, True),
    _CaseRow("start_agent", _R, _LOW, 2, False),
    _CaseRow("start_agent", _R, _MED, 4, True),
    _CaseRow("complaint_progress", _C, _HIGH, 3, True),
    _CaseRow("ro_started", _R, _CRIT, 1.4, False),
    # on hold
    _CaseRow("hold_part", _R, _MED, 6, False),
    _CaseRow("hold_part", _R, _HIGH, 5, True),
    _CaseRow("hold_customer", _R, _LOW, 8, False),
    _CaseRow("hold_customer", _C, _LOW, 7, False),
    # escalated
    _CaseRow("escalate_assigned", _C, _HIGH, 2, True),
    _CaseRow("escalate_assigned", _C, _CRIT, 1, False),
    _CaseRow("escalate_new", _R, _CRIT, 0.5, False),
    _CaseRow("declined_escalated", _R, _HIGH, 3, False),
    # resolved
    _CaseRow("resolved_repair", _R, _MED, 4, True, survey=0, warranty="in"),
    _CaseRow("resolved_repair", _R, _HIGH, 5, False, warranty="out"),
    _CaseRow("resolved_repair", _R, _MED, 3, True, survey=0, warranty="out"),
    _CaseRow("resolved_remote", _R, _LOW, 2, True),
    _CaseRow("resolved_remote", _R, _MED, 6, False),
    _CaseRow("resolved_complaint", _C, _MED, 5, True, survey=0),
    # closed
    _CaseRow("closed_repair", _R, _MED, 40, True, survey=4, warranty="out", customer="CUS-0001",
             serial="AB12345",
             fault=0),
    _CaseRow("closed_repair", _R, _HIGH, 85, True, survey=5, warranty="in"),
    _CaseRow("closed_repair", _R, _MED, 72, True, survey=2, warranty="out"),
    _CaseRow("closed_repair", _R, _LOW, 61, False, warranty="in"),
    _CaseRow("closed_repair", _R, _CRIT, 50, True, survey=5, warranty="in"),
    _CaseRow("closed_complaint", _C, _HIGH, 33, True, survey=1),
    _CaseRow("closed_complaint", _C, _LOW, 26, False),
    _CaseRow("closed_cancelled", _R, _LOW, 19, True, survey=3),
    _CaseRow("closed_repair", _R, _MED, 14, True, survey=4, warranty="in"),
    _CaseRow("closed_remote", _R, _LOW, 10, False),
)
_REPAIR_PATHS = frozenset({"dispatch_live", "accepted_today", "dispatch", "accepted", "ro_started",
                           "hold_part",
                           "declined_escalated", "resolved_repair", "closed_repair", "closed_cancelled"})
_SURVEY_COMMENTS = {
    1: ("Very disappointed, I had to call three times.", "非常失望，打了三次电话才有人处理。"),
    2: ("Fixed in the end, but it took far too long.", "最后修好了，但是拖得太久。"),
    3: ("OK, the technician was on time.", "还可以，师傅准时到了。"),
    4: ("Good service, thank you.", "服务很好，谢谢。"),
    5: ("Fast and friendly, excellent!", "又快又专业，非常满意！"),
}

# --- sales --------------------------------------------------------------------------------------

_DEAL_ITEMS: dict[CustomerType, tuple[tuple[str, str], ...]] = {
    CustomerType.INTERMEDIATE: (("dealer renewal 2026", "2026年经销续约"),
                                ("WM-3000 launch stock", "WM-3000新品首批备货"),
                                ("DW-700 kitchen bundle", "DW-700厨电套餐"),
                                ("summer AC stock", "夏季空调备货"),
                                ("showroom refit", "展厅升级"), ("618 promotion stock", "618促销备货")),
    CustomerType.PUBLIC: (("AC-900 classroom retrofit", "AC-900教室空调改造"),
                          ("WH-800 dormitory water heaters", "WH-800宿舍热水器"),
                          ("canteen dishwashers DW-700", "食堂洗碗机DW-700"),
                          ("ward air conditioners AC-350", "病房空调AC-350"),
                          ("annual maintenance contract", "年度维保合同")),
    CustomerType.END: (("kitchen upgrade", "厨房电器升级"), ("AC-350 replacement", "AC-350空调更换")),
}
_AMOUNTS = {CustomerType.INTERMEDIATE: (60, 900), CustomerType.PUBLIC: (80, 1200), CustomerType.END: (8, 60)}
_LOST = (
    # reason (en), reason (zh), competitor
    ("Competitor offered 12% lower price on the same volume.", "竞争对手同等数量报价低12%。",
     "Haiyue Electric 海悦电器"),
    ("Chose a brand with its own installation team in the district.", "选择了在本区有安装团队的品牌。",
     "NordKlima"),
    ("Tender awarded on price; our bid was 8% higher.", "招标按价格评标，我们的报价高8%。",
     "Donghai Home 东海家电"),
    ("Budget cut; bought a cheaper basic model.", "预算削减，改买了便宜的基础款。", "Everbright Appliances"),
)
_STAGE_ORDER = (OpportunityStage.QUALIFICATION, OpportunityStage.NEEDS_ANALYSIS, OpportunityStage.PROPOSAL,
                OpportunityStage.NEGOTIATION)
_DEAL_STAGES = ((OpportunityStage.QUALIFICATION, 8), (OpportunityStage.NEEDS_ANALYSIS, 7),
                (OpportunityStage.PROPOSAL, 7), (OpportunityStage.NEGOTIATION, 6),
                (OpportunityStage.CLOSED_WON, 7), (OpportunityStage.CLOSED_LOST, 5))
ACME_DEAL = "Acme Appliances renewal 2026"

# (kind, summary, outcome, next step) per language
_VISIT_NOTES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "en": (("visit", "Quarterly business review: sell-through and stock of WM-2023 and DW-500.",
            "Positive; they want a better margin on the DW-700.", "Send the updated price list"),
           ("visit", "Showroom check and display refresh.", "Two demo units need new price cards.",
            "Deliver new price cards and brochures"),
           ("call", "Called about the summer air-conditioner promotion.", "Interested in 20 AC-350 units.",
            "Send the AC-350 promotion quote"),
           ("meeting", "Tender briefing with the procurement office.", "Tender closes next month.",
            "Prepare the tender documents"),
           ("visit", "Product training for the store staff on the WM-3000.", "Staff want a second session.",
            "Book a second training session"),
           ("meeting", "Service follow-up after a complaint.", "Customer satisfied with the fix.",
            "Confirm the goodwill voucher in writing")),
    "zh": (("visit", "季度业务回顾：WM-2023和DW-500的销售与库存情况。", "整体积极，希望DW-700提高利润空间。",
            "发送最新价格表"),
           ("visit", "检查展厅并更新陈列。", "两台样机需要更换价签。", "送新价签和宣传册"),
           ("call", "电话沟通夏季空调促销。", "有意采购20台AC-350。", "发送AC-350促销报价"),
           ("meeting", "与采购办公室的招标说明会。", "招标下个月截止。", "准备投标文件"),
           ("visit", "为门店员工做WM-3000产品培训。", "员工希望再培训一次。", "预约第二次培训"),
           ("meeting", "投诉处理后的回访。", "客户对处理结果满意。", "书面确认补偿代金券")),
}
# follow-up buckets of the 40 visits: due today, overdue, due later, no next step, done
_VISIT_BUCKETS = ("today",) * 5 + ("overdue",) * 7 + ("future",) * 12 + ("none",) * 10 + ("done",) * 6


# --- plan ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _CustomerPlan:
    code: str
    name: str
    slug: str
    type: CustomerType
    city: str
    segment: str
    lang: str
    user: tuple[str, str] | None
    owner: str = ""
    lifecycle: LifecycleStage = LifecycleStage.ACTIVE
    phone: str = ""
    email: str = ""
    address: str = ""
    # name, title, phone, email, lang
    contacts: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _UnitPlan:
    serial: str
    product: str
    customer: str
    sold_on: date
    months: int
    warranty_type: WarrantyType
    last_maintenance: date | None


@dataclass(slots=True)
class _CasePlan:
    row: _CaseRow
    customer: str
    city: str
    lang: str
    serial: str | None
    fault: _Fault
    opened_at: datetime
    opener: str
    agent: str
    manager: str
    technician: str
    channel: Channel
    kb: str | None


@dataclass(slots=True)
class _DealPlan:
    customer: str
    owner: str
    name: str
    stage: OpportunityStage
    created_at: datetime
    moves: list[tuple[datetime, OpportunityPatch]]
    first_amount: Decimal


@dataclass(slots=True)
class _VisitPlan:
    customer: str
    rep: str
    at: datetime
    data: VisitIn
    done_at: datetime | None


class _ReplayClock:
    """A clock the loader sets to moments in the past, so the services stamp history as it happened."""

    def __init__(self, base: Clock) -> None:
        self._base = base
        self._at: datetime | None = None

    def now(self) -> datetime:
        """The replayed moment, or the real clock when none is set."""
        return self._at if self._at is not None else self._base.now()

    def set(self, at: datetime | None) -> None:
        """Replay `at` (None: follow the real clock again)."""
        self._at = at


async def load_demo(core: Core) -> DemoReport:
    """Load the demo dataset once; a second call changes nothing and says it was already loaded."""
    started = wallclock.perf_counter()
    async with core.uow() as uow:
        marker = await uow.session.get(DemoMarker, DEMO_MARKER)
    if marker is not None:
        return DemoReport(already_loaded=True, counts=await _counts(core), personas=await _personas(core),
                          seconds=wallclock.perf_counter() - started)
    loader = _Loader(core)
    await loader.run()
    return DemoReport(already_loaded=False, counts=await _counts(core), personas=await _personas(core),
                      seconds=wallclock.perf_counter() - started)


class _Loader:
    """Plans the whole dataset up front (pure, seeded), then creates what is not there yet."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.replay = _ReplayClock(core.clock)
        # The same services over the same engine, with a clock the loader moves through the past.
        self.past = build_core(core.settings, clock=self.replay, engine=core.engine)
        self.tz = ZoneInfo(core.settings.timezone)
        self.start = core.clock.now()
        self.today = self.start.astimezone(self.tz).date()
        self.rng = random.Random(SEED)
        self.actors: dict[str, Actor] = {}
        self.outbox_baseline = 0
        self.customers: list[_CustomerPlan] = []
        self.by_code: dict[str, _CustomerPlan] = {}
        self.units: list[_UnitPlan] = []
        self.cases: list[_CasePlan] = []
        self.deals: list[_DealPlan] = []
        self.visits: list[_VisitPlan] = []

    # --- time helpers ---------------------------------------------------------------------------

    def local(self, day: date, hour: int, minute: int = 0) -> datetime:
        """A wall-clock moment in the company's timezone."""
        return datetime.combine(day, time(hour, minute), tzinfo=self.tz)

    def at(self, moment: datetime) -> None:
        """Replay `moment`, never later than just before the real now (history stays history)."""
        self.replay.set(min(moment, self.start - timedelta(minutes=1)))

    # --- planning -------------------------------------------------------------------------------

    def plan(self) -> None:
        """Decide every record, in a fixed order from one seed, independently of what the database holds."""
        self._plan_customers()
        self._plan_units()
        self._plan_customer_dates()
        self._plan_cases()
        self._plan_deals()
        self._plan_visits()

    def _phone(self, city: str | None = None) -> str:
        rng = self.rng
        if city is None:
            return (f"+86 1{rng.choice('3589')}{rng.randint(0, 9)} {rng.randint(1000, 9999)} "
                    f"{rng.randint(1000, 9999)}")
        return f"+86 {_CITY[city][2]} {rng.randint(5000, 8999)} {rng.randint(1000, 9999)}"

    def _plan_customers(self) -> None:
        rng = self.rng
        number = 0
        rotation = {city: 0 for city in _BRANCH}
        zh_pool, en_pool = list(_ZH_PEOPLE), list(_EN_PEOPLE)
        for kind, rows in ((CustomerType.END, _END), (CustomerType.INTERMEDIATE, _INTERMEDIATE),
                           (CustomerType.PUBLIC, _PUBLIC)):
            for name, slug, city, segment, lang, user in rows:
                number += 1
                plan = _CustomerPlan(code=f"CUS-{number:04d}", name=name, slug=slug, type=kind, city=city,
                                     segment=segment, lang=lang, user=user)
                reps = _BRANCH[city]["reps"]
                assert isinstance(reps, tuple)
                owner = _FIXED_OWNER.get(name) or _MANAGER_OWNED.get(name)
                if owner is None:
                    owner = str(reps[rotation[city] % len(reps)])
                    rotation[city] += 1
                plan.owner = owner
                if name in _PROSPECTS:
                    plan.lifecycle = LifecycleStage.PROSPECT
                else:
                    plan.lifecycle = rng.choices(
                        (LifecycleStage.NEW, LifecycleStage.ACTIVE, LifecycleStage.LOYAL,
                         LifecycleStage.AT_RISK,
                         LifecycleStage.CHURNED), weights=(18, 45, 22, 10, 5))[0]
                zh_city, en_city, _ = _CITY[city]
                street_zh, street_en = rng.choice(_STREETS[city])
                house = rng.randint(8, 1999)
                if lang == "zh":
                    plan.address = f"{zh_city}{street_zh}{house}号"
                else:
                    plan.address = f"{house} {street_en}, {en_city}"
                household = segment == "household"
                domain = "example.cn" if lang == "zh" else "example.com"
                plan.email = f"{slug}@{domain}" if household else f"info@{slug}.example.com"
                plan.phone = self._phone(None if household else city)
                titles = _TITLES["household" if household else segment if segment == "small_business"
                                 else kind.value]
                contacts: list[tuple[str, str, str]] = []
                if name in _FIXED_CONTACTS:
                    contacts = list(_FIXED_CONTACTS[name])
                else:
                    if user is not None:
                        contacts.append((user[1], titles[0][0 if lang == "en" else 1], lang))
                    elif household:
                        contacts.append((name, titles[0][0 if lang == "en" else 1], lang))
                    wanted = rng.randint(1, 2) if household else rng.randint(2, 3)
                    while len(contacts) < wanted:
                        contact_lang = lang if rng.random() < 0.8 else ("zh" if lang == "en" else "en")
                        pool = zh_pool if contact_lang == "zh" else en_pool
                        person = pool[rng.randrange(len(pool))][0]
                        if any(person == existing[0] for existing in contacts):
                            continue
                        pair = rng.choice(titles[1:] if household else titles)
                        contacts.append((person, pair[0 if contact_lang == "en" else 1], contact_lang))
                for person, title, contact_lang in contacts:
                    person_slug = _slug_for(person)
                    email = (f"{person_slug}@{domain}" if household else f"{person_slug}@{slug}.example.com")
                    plan.contacts.append((person, title, self._phone(), email, contact_lang))
                self.customers.append(plan)
                self.by_code[plan.code] = plan

    def _plan_units(self) -> None:
        rng = self.rng
        used: set[int] = {917, 12345}
        today = self.today

        def serial_for(product: str) -> str:
            while True:
                number = rng.randint(100, 29999)
                if number not in used:
                    used.add(number)
                    return _SERIAL_FORMAT[product].format(number)

        def add(serial: str, product: str, customer: str, ends_on: date, extended: bool = False) -> None:
            months = _PRODUCT_BY_CODE[product][3] + (24 if extended else 0)
            sold_on = _sold_on_for(ends_on, months)
            interval = _PRODUCT_BY_CODE[product][4]
            self.units.append(_UnitPlan(
                serial=serial, product=product, customer=customer, sold_on=sold_on, months=months,
                warranty_type=WarrantyType.EXTENDED if extended else WarrantyType.STANDARD,
                last_maintenance=self._last_maintenance(sold_on, interval)))

        # The personas' units, exactly as the README's example sentences use them.
        add("WM2023-00917", "WM-2023", "CUS-0001", today + timedelta(days=482))
        add("AB12345", "DW-500", "CUS-0001", today - timedelta(days=120))
        add("RF24317", "RF-450", "CUS-0001", today + timedelta(days=5))
        add("AC23088", "AC-350", "CUS-0001", today + timedelta(days=21))
        add("WM3000-00342", "WM-3000", "CUS-0002", today + timedelta(days=900), extended=True)
        add("AC19876", "AC-350", "CUS-0002", today - timedelta(days=75))
        add("DW500-01288", "DW-500", "CUS-0002", today + timedelta(days=260))
        used.update({342, 1288})
        for plan in self.customers:
            if plan.code in ("CUS-0001", "CUS-0002") or plan.name in _PROSPECTS:
                continue
            low, high = _UNITS_PER_CUSTOMER[plan.type]
            for _ in range(rng.randint(low, high)):
                product = rng.choice(_PRODUCTS_FOR_TYPE[plan.type])
                extended = rng.random() < 0.15
                months = _PRODUCT_BY_CODE[product][3] + (24 if extended else 0)
                bucket = rng.choices(("in", "30d", "7d", "expired"), weights=(45, 12, 8, 35))[0]
                if bucket == "in":
                    ends_on = today + timedelta(days=rng.randint(31, min(700, months * 30 - 40)))
                elif bucket == "30d":
                    ends_on = today + timedelta(days=rng.randint(8, 30))
                elif bucket == "7d":
                    ends_on = today + timedelta(days=rng.randint(0, 7))
                else:
                    ends_on = today - timedelta(days=rng.randint(1, 900))
                add(serial_for(product), product, plan.code, ends_on, extended)

    def _last_maintenance(self, sold_on: date, interval: int | None) -> date | None:
        """Most units were serviced on time; some fall due within two weeks, a few are overdue."""
        if interval is None:
            return None
        rng = self.rng
        bucket = rng.choices(("kept", "due_soon", "overdue"), weights=(80, 12, 8))[0]
        if bucket == "due_soon":
            last = _months_before(self.today + timedelta(days=rng.randint(1, 14)), interval)
        elif bucket == "overdue":
            last = _months_before(self.today - timedelta(days=rng.randint(10, 60)), interval)
        else:
            last = self.today - timedelta(days=rng.randint(10, max(11, interval * 30 - 20)))
        return last if last > sold_on else None

    def _plan_customer_dates(self) -> None:
        first_sale: dict[str, date] = {}
        for unit in self.units:
            first_sale[unit.customer] = min(first_sale.get(unit.customer, unit.sold_on), unit.sold_on)
        for plan in self.customers:
            if plan.code in first_sale:
                day = first_sale[plan.code] - timedelta(days=self.rng.randint(7, 90))
            else:
                day = self.today - timedelta(days=self.rng.randint(10, 60))
            plan.created_at = self.local(day, 10, self.rng.randint(0, 59))

    def _plan_cases(self) -> None:
        rng = self.rng
        units_by_customer: dict[str, list[_UnitPlan]] = {}
        for each in self.units:
            units_by_customer.setdefault(each.customer, []).append(each)
        with_users = [plan.code for plan in self.customers if plan.user is not None]
        used_customers: set[str] = set()
        used_subjects: set[tuple[str, str]] = set()
        for row in _CASES:
            opened_at = self.start - timedelta(days=row.days_ago)
            if row.days_ago >= 1:
                # Older cases open in office hours on their day.
                opened_at = self.local(opened_at.astimezone(self.tz).date(), rng.randint(8, 16),
                                       rng.randint(0, 59))
            opened_day = opened_at.astimezone(self.tz).date()
            city_needed = "SH" if row.technician in ("zhang.wei", "zhao.qiang") else None
            unit: _UnitPlan | None = None
            if row.customer is not None:
                code = row.customer
                unit = next((u for u in self.units if u.serial == row.serial), None)
            else:
                candidates: list[tuple[str, _UnitPlan | None]] = []
                pool = with_users if row.by_customer else [plan.code for plan in self.customers]
                for code in pool:
                    plan = self.by_code[code]
                    if code in ("CUS-0001", "CUS-0002") or (city_needed and plan.city != city_needed):
                        continue
                    for candidate in units_by_customer.get(code, []):
                        if candidate.sold_on > opened_day - timedelta(days=14):
                            continue
                        covered = WarrantyStatus.on(candidate.sold_on, candidate.months,
                                                    opened_day).in_warranty
                        covered_later = WarrantyStatus.on(candidate.sold_on, candidate.months,
                                                          opened_day + timedelta(days=5)).in_warranty
                        if row.warranty == "in" and not (covered and covered_later):
                            continue
                        if row.warranty == "out" and covered:
                            continue
                        candidates.append((code, candidate))
                fresh = [item for item in candidates if item[0] not in used_customers]
                code, unit = rng.choice(fresh or candidates)
            used_customers.add(code)
            plan = self.by_code[code]
            if row.kind is RequestKind.COMPLAINT:
                faults = _COMPLAINTS
            else:
                assert unit is not None
                faults = _FAULTS[_PRODUCT_BY_CODE[unit.product][2]]
            if row.fault is not None:
                fault = faults[row.fault]
            else:
                options = [f for f in faults
                           if (code, f.zh if plan.lang == "zh" else f.en) not in used_subjects]
                fault = rng.choice(options or list(faults))
            used_subjects.add((code, fault.zh if plan.lang == "zh" else fault.en))
            branch = _BRANCH[plan.city]
            technicians = branch["technicians"]
            assert isinstance(technicians, tuple)
            technician = row.technician or str(rng.choice(technicians))
            channel = (rng.choice((Channel.WEB, Channel.TELEGRAM, Channel.REST)) if row.by_customer
                       else rng.choice((Channel.PHONE, Channel.EMAIL)))
            if code == "CUS-0001":
                channel = Channel.WEB
            kb = None
            if fault.kb is not None and row.path in ("resolved_remote", "closed_remote", "closed_cancelled"):
                kb = _kb_code(fault.kb, plan.lang)
            opener = plan.user[0] if row.by_customer and plan.user else str(branch["agent"])
            self.cases.append(_CasePlan(
                row=row, customer=code, city=plan.city, lang=plan.lang,
                serial=unit.serial if unit is not None and row.kind is RequestKind.REQUEST else None,
                fault=fault, opened_at=opened_at, opener=opener, agent=str(branch["agent"]),
                manager=str(branch["service_manager"]), technician=technician, channel=channel, kb=kb))

    def _quarter_bounds(self) -> tuple[date, date, date]:
        """Start of this quarter, its last day, and the last day of the next one."""
        first_month = 3 * ((self.today.month - 1) // 3) + 1
        quarter_start = date(self.today.year, first_month, 1)
        this_end = add_months(quarter_start, 3) - timedelta(days=1)
        next_end = add_months(quarter_start, 6) - timedelta(days=1)
        return quarter_start, this_end, next_end

    def _plan_deals(self) -> None:
        rng = self.rng
        quarter_start, this_end, next_end = self._quarter_bounds()
        stages = [stage for stage, count in _DEAL_STAGES for _ in range(count)]
        acme = next(plan for plan in self.customers if plan.name == "Acme Appliances Ltd")
        prospects = [plan for plan in self.customers if plan.lifecycle is LifecycleStage.PROSPECT]
        # Fixed first: the Acme renewal sits at proposal so "move the Acme renewal to negotiation, 50k"
        # works; prospects only have early deals. The rest of the stages go to random customers.
        fixed: list[tuple[_CustomerPlan, str, OpportunityStage]] = [
            (acme, ACME_DEAL, OpportunityStage.PROPOSAL)]
        for number, plan in enumerate(prospects):
            item_en, item_zh = _DEAL_ITEMS[plan.type][0]
            stage = OpportunityStage.NEEDS_ANALYSIS if number % 2 else OpportunityStage.QUALIFICATION
            fixed.append((plan, f"{plan.name} {item_zh if plan.lang == 'zh' else item_en}", stage))
        for _plan, _name, stage in fixed:
            stages.remove(stage)
        rng.shuffle(stages)
        pool = [plan for plan in self.customers
                if (plan.type is not CustomerType.END or plan.segment == "small_business")
                and plan.lifecycle is not LifecycleStage.PROSPECT and plan.code != acme.code]
        chosen = list(fixed)
        names: set[tuple[str, str]] = {(plan.code, name) for plan, name, _stage in fixed}
        for stage in stages:
            while True:
                plan = rng.choice(pool)
                item_en, item_zh = rng.choice(_DEAL_ITEMS[plan.type])
                name = f"{plan.name} {item_zh if plan.lang == 'zh' else item_en}"
                if (plan.code, name) not in names:
                    break
            names.add((plan.code, name))
            chosen.append((plan, name, stage))
        for index, (plan, name, stage) in enumerate(chosen):
            low, high = _AMOUNTS[plan.type]
            amount = Decimal(rng.randint(low * 2, high * 2) * 500)
            if name == ACME_DEAL:
                amount = Decimal(42000)
            moves: list[tuple[datetime, OpportunityPatch]] = []
            if stage in (OpportunityStage.CLOSED_WON, OpportunityStage.CLOSED_LOST):
                days_in_quarter = (self.today - quarter_start).days
                closed_day = self.today - timedelta(days=rng.randint(0, max(0, min(45, days_in_quarter - 1))))
                closed_at = min(self.local(closed_day, rng.randint(9, 17), rng.randint(0, 59)),
                                self.start - timedelta(hours=2))
                created_at = closed_at - timedelta(days=rng.randint(25, 70))
                reached = rng.randint(2, 3)
                steps = [*_STAGE_ORDER[1:reached + 1]]
                span = (closed_at - created_at) / (len(steps) + 1)
                for step_index, step in enumerate(steps, start=1):
                    patch = OpportunityPatch(stage=step)
                    if step is OpportunityStage.PROPOSAL:
                        patch = OpportunityPatch(stage=step, amount=_round_amount(amount * Decimal("1.08")))
                    moves.append((created_at + span * step_index, patch))
                if stage is OpportunityStage.CLOSED_WON:
                    final = OpportunityPatch(stage=stage, amount=_round_amount(amount * Decimal("1.03")),
                                             expected_close=closed_day)
                else:
                    reason_en, reason_zh, competitor = _LOST[rng.randrange(len(_LOST))]
                    final = OpportunityPatch(stage=stage,
                                             lost_reason=reason_zh if plan.lang == "zh" else reason_en,
                                             competitor=competitor, expected_close=closed_day)
                moves.append((closed_at, final))
                expected = closed_day
            else:
                target = _STAGE_ORDER.index(stage)
                stalled = stage is OpportunityStage.PROPOSAL and index % 3 == 1
                age = rng.randint(70, 90) if stalled else rng.randint(15, 75)
                created_at = self.local(self.today - timedelta(days=age), rng.randint(9, 17),
                                        rng.randint(0, 59))
                last = self.start - timedelta(days=45 if stalled else rng.randint(1, 6))
                steps = list(_STAGE_ORDER[1:target + 1])
                span = (last - created_at) / max(1, len(steps))
                for step_index, step in enumerate(steps, start=1):
                    patch = OpportunityPatch(stage=step)
                    if step is OpportunityStage.NEGOTIATION:
                        patch = OpportunityPatch(stage=step, amount=_round_amount(amount * Decimal("0.95")))
                    moves.append((created_at + span * step_index, patch))
                horizon_this = (this_end - self.today).days
                if index % 2 == 0 and horizon_this >= 7:
                    expected = self.today + timedelta(days=rng.randint(7, horizon_this))
                else:
                    expected = this_end + timedelta(days=rng.randint(1, (next_end - this_end).days))
            self.deals.append(_DealPlan(customer=plan.code, owner=plan.owner, name=name, stage=stage,
                                        created_at=created_at, moves=moves, first_amount=amount))
            self.deals[-1].moves.insert(0, (created_at + timedelta(minutes=5),
                                            OpportunityPatch(expected_close=expected)))

    def _plan_visits(self) -> None:
        rng = self.rng
        by_owner: dict[str, list[_CustomerPlan]] = {}
        for plan in self.customers:
            if plan.segment != "household":
                by_owner.setdefault(plan.owner, []).append(plan)
        reps = sorted(by_owner)
        buckets = list(_VISIT_BUCKETS)
        buckets.remove("today")
        buckets.remove("overdue")
        rng.shuffle(buckets)
        buckets = ["today", "overdue", *buckets]  # the two scripted visits below come first
        acme = next(plan for plan in self.customers if plan.name == "Acme Appliances Ltd")
        city_store = next(plan for plan in self.customers if plan.name == "上海家电城")
        # li.lei's own agenda: a quote for Acme due today and an overdue one at the appliance city.
        fixed = [(acme, "today", 3, 2), (city_store, "overdue", 12, 0)]
        seen: set[tuple[str, date]] = set()
        for index, bucket in enumerate(buckets):
            note_index: int | None = None
            if index < len(fixed):
                plan, bucket, days_back, note_index = fixed[index]
            else:
                plan = rng.choice(by_owner[reps[rng.randrange(len(reps))]])
                days_back = rng.randint(0, 59)
                if bucket in ("today", "future"):
                    days_back = days_back % 20 + (1 if bucket == "today" else 0)
                elif bucket in ("overdue", "done"):
                    days_back = max(6, days_back)
            visited_on = self.today - timedelta(days=days_back)
            while (plan.code, visited_on) in seen:
                visited_on -= timedelta(days=1)
            seen.add((plan.code, visited_on))
            visit_at = self.local(visited_on, 17, rng.randint(0, 45))
            notes = _VISIT_NOTES[plan.lang]
            kind, summary, outcome, next_step = notes[note_index if note_index is not None
                                                      else rng.randrange(len(notes))]
            if index == 0:
                next_step = "Send the renewal quote to Acme"
            contacts_met = [plan.contacts[0][0]] if plan.contacts else []
            due: datetime | None = None
            done_at: datetime | None = None
            if bucket == "today":
                due = min(max(self.local(self.today, 17), self.start + timedelta(hours=1)),
                          self.local(self.today, 23, 59))
            elif bucket in ("overdue", "done"):
                due = self.local(visited_on + timedelta(days=rng.randint(2, 4)), 12)
                if bucket == "done":
                    done_at = due - timedelta(hours=3)
            elif bucket == "future":
                due = self.local(self.today + timedelta(days=rng.randint(1, 10)), 10)
            else:
                next_step = ""
            self.visits.append(_VisitPlan(
                customer=plan.code, rep=plan.owner, at=visit_at, done_at=done_at,
                data=VisitIn(customer_code=plan.code, visited_on=visited_on, kind=kind,
                             contacts_met=contacts_met,
                             summary=summary, outcome=outcome, next_step=next_step, next_step_due=due)))

    # --- execution ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Create everything that is missing, phase by phase; each phase checks natural keys first."""
        self.plan()
        self.outbox_baseline = await self._outbox_baseline()
        try:
            await self._organisation()
            await self._catalogue()
            await self._customers()
            await self._customer_users()
            await self._actors()
            await self._installed_base()
            await self._settle_history()
            await self._knowledge()
            await self._service()
            await self._settle_history()
            await self._sales()
            self.at(self.start - timedelta(minutes=5))
            await self.past.customers.recompute_values(SYSTEM)
            await self._settle_history()
            # The one thing that happens "now": a fresh job waiting for zhang.wei's accept (J7).
            self.replay.set(None)
            await self._live()
        finally:
            self.replay.set(None)
        await self._mark_loaded()

    async def _organisation(self) -> None:
        self.at(self.start - timedelta(days=800))
        org = self.past.org
        async with self.core.uow() as uow:
            existing = set((await uow.session.execute(select(User.username))).scalars())
        for code, name, kind, parent, _head in _DEPARTMENTS:
            await org.add_department(SYSTEM, code=code, name=name, kind=kind, parent_code=parent)
        for username, role, name, department, manager, lang in _STAFF:
            if username in existing:
                continue
            slug = _PERSONA_IDENTITIES.get(username)
            await org.add_user(SYSTEM, UserIn(
                username=username, role=role, name=name, email=f"{username}@example.com",
                phone=_staff_phone(username), department=department, manager=manager, lang=lang,
                timezone=TIMEZONE,
                identities=[f"{channel}:{slug}" for channel in ("rest", "web", "terminal")] if slug else [],
            ))
        for code, name, kind, parent, head in _DEPARTMENTS:
            await org.add_department(SYSTEM, code=code, name=name, kind=kind, parent_code=parent,
                                     head_username=head)

    async def _catalogue(self) -> None:
        self.at(self.start - timedelta(days=790))
        past = self.past
        for code, name, category, months, interval in _PRODUCTS:
            await past.installed.upsert_product(SYSTEM, ProductIn(
                code=code, name=name, category=category, default_warranty_months=months,
                maintenance_interval_months=interval))
        for code, name, address, department in _STATIONS:
            await past.service_desk.upsert_station(SYSTEM, code=code, name=name, address=address,
                                                   department_code=department)
        for code, name, price in _PARTS:
            await past.service_desk.upsert_part(SYSTEM, code=code, name=name, unit_price=Decimal(price))
        async with self.core.uow() as uow:
            stocked = set((await uow.session.execute(
                select(ServiceStation.code, Part.code)
                .join(PartStock, PartStock.station_id == ServiceStation.id)
                .join(Part, Part.id == PartStock.part_id)
            )).tuples())
        for station, levels in _STOCK.items():
            for part, (quantity, minimum) in levels.items():
                # Counted once: a re-run must not undo what repairs have since taken out.
                if (station, part) not in stocked:
                    await past.service_desk.set_stock(SYSTEM, station_code=station, part_code=part,
                                                      quantity=quantity, min_quantity=minimum)
        for technician, station in _TECHNICIAN_STATION.items():
            await past.service_desk.assign_station(SYSTEM, technician=technician, station_code=station)
            await past.service_desk.set_skills(SYSTEM, technician=technician,
                                               skills=list(_TECHNICIAN_SKILLS[technician]))

    async def _customers(self) -> None:
        past = self.past
        async with self.core.uow() as uow:
            existing = set((await uow.session.execute(select(Customer.code))).scalars())
            contacts = set((await uow.session.execute(
                select(Customer.code, Contact.name).join(Contact, Contact.customer_id == Customer.id)
            )).tuples())
        for plan in self.customers:
            assert plan.created_at is not None
            self.at(plan.created_at)
            if plan.code not in existing:
                await past.customers.create(SYSTEM, CustomerIn(
                    code=plan.code, name=plan.name, type=plan.type, segment=plan.segment, phone=plan.phone,
                    email=plan.email, address=plan.address, owner=plan.owner, lifecycle_stage=plan.lifecycle))
            for name, title, phone, email, lang in plan.contacts:
                if (plan.code, name) not in contacts:
                    await past.customers.add_contact(SYSTEM, plan.code, ContactIn(
                        name=name, title=title, phone=phone, email=email, lang=lang))

    async def _customer_users(self) -> None:
        async with self.core.uow() as uow:
            existing = set((await uow.session.execute(select(User.username))).scalars())
        for plan in self.customers:
            if plan.user is None or plan.user[0] in existing:
                continue
            username, person = plan.user
            assert plan.created_at is not None
            self.at(plan.created_at + timedelta(days=1))
            contact = next(c for c in plan.contacts if c[0] == person)
            slug = _PERSONA_IDENTITIES.get(username)
            await self.past.org.add_user(SYSTEM, UserIn(
                username=username, role=Role.CUSTOMER, name=person, email=contact[3],
                phone=contact[2], customer_code=plan.code, lang=plan.lang, timezone=TIMEZONE,
                identities=[f"{channel}:{slug}" for channel in ("rest", "web", "terminal")] if slug else [],
            ))
        # No service sets notification preferences yet: give the two customer personas realistic ones
        # (quiet hours, preferred channels) directly, only if they still have the empty defaults.
        async with self.core.uow() as uow:
            rows = (await uow.session.execute(
                select(NotificationPreference).join(User, User.id == NotificationPreference.user_id)
                .where(User.username.in_(["wang.fang", "oliver.smith"]))
            )).scalars().all()
            usernames = dict((await uow.session.execute(
                select(User.id, User.username).where(User.username.in_(["wang.fang", "oliver.smith"]))
            )).tuples().all())
            for preference in rows:
                if preference.channel_order or preference.quiet_from is not None:
                    continue
                if usernames[preference.user_id] == "wang.fang":
                    preference.channel_order = ["web", "sms", "email"]
                    preference.quiet_from, preference.quiet_to = time(22, 0), time(8, 0)
                else:
                    preference.channel_order = ["email", "web"]
            await uow.commit()

    async def _actors(self) -> None:
        async with self.core.uow() as uow:
            active = select(User.username).where(User.active.is_(True))
            names = list((await uow.session.execute(active)).scalars())
        wanted = {row[0] for row in _STAFF} | {plan.user[0] for plan in self.customers if plan.user}
        for username in sorted(wanted & set(names)):
            self.actors[username] = await self.core.org.actor_for_username(username)

    async def _installed_base(self) -> None:
        async with self.core.uow() as uow:
            existing = set((await uow.session.execute(select(InstalledProduct.serial_number))).scalars())
        for unit in self.units:
            if unit.serial in existing:
                continue
            self.at(self.local(unit.sold_on, 11))
            await self.past.installed.register(SYSTEM, InstalledProductIn(
                serial_number=unit.serial, product_code=unit.product, customer_code=unit.customer,
                sold_on=unit.sold_on, warranty_months=unit.months, warranty_type=unit.warranty_type))
        # No service records a maintenance visit: write the last one directly, as a historical fact.
        last = {unit.serial: unit.last_maintenance for unit in self.units if unit.last_maintenance}
        async with self.core.uow() as uow:
            for unit_row in (await uow.session.execute(
                select(InstalledProduct).where(InstalledProduct.serial_number.in_(list(last)),
                                               InstalledProduct.last_maintenance_on.is_(None))
            )).scalars():
                unit_row.last_maintenance_on = last[unit_row.serial_number]
            await uow.commit()

    async def _knowledge(self) -> None:
        async with self.core.uow() as uow:
            existing = set((await uow.session.execute(select(KbArticle.code))).scalars())
        for index, (code, lang, product, category, title, symptoms, solution) in enumerate(_KB):
            if code in existing:
                continue
            self.at(self.start - timedelta(days=300 - index))
            await self.past.knowledge.upsert(SYSTEM, KbArticleIn(
                code=code, title=title, category=category, product_code=product, symptoms=symptoms,
                solution=solution, lang=lang))

    async def _service(self) -> None:
        async with self.core.uow() as uow:
            existing = set((await uow.session.execute(
                select(Customer.code, ServiceRequest.subject)
                .join(Customer, Customer.id == ServiceRequest.customer_id)
            )).tuples())
        for case in self.cases:
            subject = case.fault.zh if case.lang == "zh" else case.fault.en
            if (case.customer, subject) in existing:
                continue
            await self._case(case, subject)

    async def _case(self, case: _CasePlan, subject: str) -> None:
        """Play one case from opening to where the script leaves it."""
        desk, surveys = self.past.service_desk, self.past.surveys
        row, fault, zh = case.row, case.fault, case.lang == "zh"
        opener = self.actors[case.opener]
        agent, manager = self.actors[case.agent], self.actors[case.manager]
        technician = self.actors[case.technician]
        customer = opener if opener.is_customer else None
        t0 = case.opened_at
        self.at(t0)
        preferred = None
        if row.path in ("new", "assign_agent") and row.by_customer:
            preferred = self.local(t0.astimezone(self.tz).date() + timedelta(days=1), 9)
        request = await desk.open_request(opener, ServiceRequestIn(
            customer_code=None if customer else case.customer, kind=row.kind, severity=row.severity,
            channel=case.channel, subject=subject, description=fault.zh_detail if zh else fault.en_detail,
            serial_number=case.serial, kb_article_code=case.kb, preferred_time=preferred))
        sr = request.ref
        fix = fault.zh_fix if zh else fault.en_fix
        path = row.path
        if path == "new" or path == "dispatch_live":
            return  # dispatch_live gets its technician "now", at the end of the load

        async def move(offset: timedelta, actor: Actor, action: str, **extra: str) -> None:
            self.at(t0 + offset)
            await desk.transition(actor, sr, TransitionIn(action=action, **extra))

        if path in _REPAIR_PATHS:
            self.at(t0 + timedelta(minutes=40))
            if path == "accepted_today":
                # Later today, and still today even when the demo is loaded late in the evening.
                scheduled = min(max(self.local(self.today, 14), self.start + timedelta(hours=2)),
                                self.local(self.today, 23, 30))
            elif path in ("dispatch", "accepted"):
                scheduled = self.local(self.today + timedelta(days=1), 10 if path == "dispatch" else 15)
            else:
                next_day = self.local(t0.astimezone(self.tz).date() + timedelta(days=1), 10)
                scheduled = max(min(next_day, self.start - timedelta(hours=3)), t0 + timedelta(hours=2))
            order = await desk.dispatch(agent, RepairOrderIn(service_request=sr, technician=case.technician,
                                                             scheduled_at=scheduled))
            ro = order.ref
            if path == "dispatch":
                return
            self.at(t0 + timedelta(minutes=70))
            if path == "declined_escalated":
                await self._decline(technician, order.id, "P-130 控制板缺货，请改派。" if zh else
                                    "No P-130 control board at my station; please reassign.")
                await move(timedelta(hours=3), agent, "escalate", comment=(
                    "技师拒单，需要主管协调。" if zh
                    else "Technician declined; needs a manager to reassign."))
                return
            if path == "closed_cancelled":
                await desk.act_on_repair(agent, ro, RepairActionIn(
                    action="cancel", comment="客户按知识库文章自行解决。" if zh else
                    "Customer fixed it following the knowledge-base article."))
                await move(timedelta(hours=2), agent, "resolve", resolution=(
                    "按知识库步骤清洗过滤网后恢复正常，无需上门。" if zh else
                    "Cleaned the filter following the KB steps; no visit needed."))
                await self._close(case, sr, t0 + timedelta(days=1), agent, customer)
                return
            await desk.act_on_repair(technician, ro, RepairActionIn(action="accept"))
            if path in ("accepted", "accepted_today"):
                return
            self.at(scheduled)
            await desk.act_on_repair(technician, ro, RepairActionIn(action="start"))
            if path == "ro_started":
                return
            if path == "hold_part":
                await move(scheduled - t0 + timedelta(minutes=40), technician, "hold",
                           comment="主控板（P-130）已向中心仓订货，预计3–5天到货。" if zh else
                           "Control board (P-130) ordered from the central warehouse; 3–5 days.")
                return
            done = scheduled + timedelta(minutes=max(30, fault.labour))
            self.at(done)
            await desk.act_on_repair(technician, ro, RepairActionIn(
                action="complete", work_summary=fix, labour_minutes=fault.labour,
                parts=[PartUsedIn(part_code=part) for part in fault.parts]))
            if path == "resolved_repair":
                if row.survey == 0:
                    self.at(done + timedelta(hours=1))
                    await surveys.create_for_request(agent, sr)
                return
            self.at(done + timedelta(hours=20))
            await desk.act_on_repair(agent, ro, RepairActionIn(action="settle",
                                                               comment="已结算" if zh else "Settled"))
            await self._close(case, sr, done + timedelta(days=1), agent, customer)
            return

        if path in ("assign_agent", "start_agent", "hold_customer", "resolved_remote", "closed_remote"):
            await move(timedelta(minutes=20), agent, "assign", assignee=agent.username)
            if path == "assign_agent":
                return
            if path in ("resolved_remote", "closed_remote"):
                await move(timedelta(minutes=50), agent, "resolve", resolution=(
                    f"电话指导客户按{case.kb or '知识库'}处理，无需上门。" if zh else
                    f"Talked the customer through {case.kb or 'the knowledge base'}; fixed without a visit."))
                if path == "closed_remote":
                    await self._close(case, sr, t0 + timedelta(days=1), agent, None)
                return
            await move(timedelta(hours=1), agent, "start", comment="电话排查中" if zh else "Troubleshooting "
                                                                                           "by phone")
            if path == "hold_customer":
                await move(timedelta(hours=2), agent, "hold", comment=(
                    "等待客户确认上门时间。" if zh else "Waiting for the customer to confirm a visit time."))
                self.at(t0 + timedelta(days=1, hours=2))
                await desk.add_comment(agent, sr, "已再次致电，留言给客户。" if zh
                                       else "Called again, left a voicemail.")
            return

        if path == "escalate_new":
            await move(timedelta(hours=1), agent, "escalate", comment=(
                "紧急：暂无空闲技师，请主管协调。" if zh
                else "Urgent and no technician free: needs a manager."))
            return
        # Complaints go to the branch's service manager (J4).
        await move(timedelta(minutes=20), agent, "assign", assignee=manager.username)
        if path == "assign_manager":
            return
        if path == "escalate_assigned":
            await move(timedelta(hours=5), agent, "escalate", comment=(
                "客户再次来电，确认时限已超。" if zh
                else "Customer called again; acknowledgement SLA missed."))
            return
        await move(timedelta(hours=2), manager, "start",
                   comment="已联系客户了解情况。" if zh else "Called the customer to hear the details.")
        if path == "complaint_progress":
            return
        await move(timedelta(days=1), manager, "resolve", resolution=fix)
        if path == "resolved_complaint":
            if row.survey == 0:
                self.at(t0 + timedelta(days=1, hours=1))
                await surveys.create_for_request(agent, sr)
            return
        await self._close(case, sr, t0 + timedelta(days=2), agent, customer)

    async def _decline(self, technician: Actor, order_id: int, reason: str) -> None:
        """Decline a job as its technician."""
        await self.past.service_desk.act_on_repair(technician, order_id, RepairActionIn(
            action="decline", comment=reason))

    async def _close(
        self, case: _CasePlan, sr: str, when: datetime, agent: Actor, customer: Actor | None
    ) -> None:
        """The customer confirms the fix (or the desk closes it), then rates it if the script says so."""
        self.at(when)
        await self.past.service_desk.transition(customer or agent, sr, TransitionIn(
            action="close", comment="已确认修好" if case.lang == "zh" else "Confirmed fixed"))
        score = case.row.survey
        if score is None:
            return
        self.at(when + timedelta(minutes=5))
        await self.past.surveys.create_for_request(agent, sr)
        if score and customer is not None:
            self.at(when + timedelta(hours=3))
            comment_en, comment_zh = _SURVEY_COMMENTS[score]
            comment = comment_zh if case.lang == "zh" else comment_en
            await self.past.surveys.answer(customer, sr, score, comment)

    async def _sales(self) -> None:
        sales = self.past.sales
        async with self.core.uow() as uow:
            session = uow.session
            deals = set((await session.execute(
                select(Customer.code, Opportunity.name).join(Customer, Customer.id == Opportunity.customer_id)
            )).tuples())
            visits = set((await session.execute(
                select(Customer.code, User.username, Visit.visited_on, Visit.summary)
                .join(Customer, Customer.id == Visit.customer_id).join(User, User.id == Visit.rep_id)
            )).tuples())
        for deal in self.deals:
            if (deal.customer, deal.name) in deals:
                continue
            owner = self.actors[deal.owner]
            self.at(deal.created_at)
            created = await sales.create_opportunity(owner, OpportunityIn(
                customer_code=deal.customer, name=deal.name, stage=OpportunityStage.QUALIFICATION,
                amount=deal.first_amount))
            for when, patch in deal.moves:
                self.at(when)
                await sales.update_opportunity(owner, created.id, patch)
        for visit in self.visits:
            key = (visit.customer, visit.rep, visit.data.visited_on, visit.data.summary)
            if key in visits:
                continue
            rep = self.actors[visit.rep]
            self.at(visit.at)
            logged = await sales.log_visit(rep, visit.data)
            if visit.done_at is not None and logged.follow_up_task_id is not None:
                self.at(visit.done_at)
                await sales.complete_task(rep, logged.follow_up_task_id)

    async def _live(self) -> None:
        case = next(case for case in self.cases if case.row.path == "dispatch_live")
        subject = case.fault.zh if case.lang == "zh" else case.fault.en
        async with self.core.uow() as uow:
            request_id = (await uow.session.execute(
                select(ServiceRequest.id).join(Customer, Customer.id == ServiceRequest.customer_id)
                .where(Customer.code == case.customer, ServiceRequest.subject == subject)
            )).scalar_one_or_none()
            if request_id is None:
                return
            dispatched = (await uow.session.execute(
                select(RepairOrder.id).where(RepairOrder.service_request_id == request_id)
            )).first()
        if dispatched is not None:
            return
        now = self.core.clock.now()
        await self.core.service_desk.dispatch(self.actors[case.agent], RepairOrderIn(
            service_request=f"SR-{request_id}", technician=case.technician,
            scheduled_at=max(self.local(self.today + timedelta(days=1), 9, 30), now + timedelta(hours=2))))

    async def _settle_history(self) -> None:
        """Replayed history was "delivered" when it happened: mark its outbox events processed, so the
        notifier does not send weeks-old news when it starts; only events from "now" stay pending."""
        async with self.core.uow() as uow:
            await uow.session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id > self.outbox_baseline, OutboxEvent.processed_at.is_(None),
                       OutboxEvent.occurred_at < self.start)
                .values(processed_at=self.start)
            )
            await uow.commit()

    async def _outbox_baseline(self) -> int:
        """The last outbox id from before the demo's first (maybe crashed) attempt.

        It is kept in a marker row until the load completes, so events committed by an attempt that
        died half-way are recognised as replayed history by the attempt that finishes the job.
        """
        async with self.core.uow() as uow:
            session = uow.session
            names = (await session.execute(
                select(DemoMarker.name).where(DemoMarker.name.startswith(_BASELINE_MARKER)))).scalars().all()
            if names:
                return min(int(name.removeprefix(_BASELINE_MARKER)) for name in names)
            baseline = (await session.execute(select(func.max(OutboxEvent.id)))).scalar() or 0
            session.add(DemoMarker(name=f"{_BASELINE_MARKER}{baseline}", loaded_at=self.start))
            await uow.commit()
            return baseline

    async def _mark_loaded(self) -> None:
        async with self.core.uow() as uow:
            await uow.session.execute(delete(DemoMarker).where(DemoMarker.name.startswith(_BASELINE_MARKER)))
            uow.session.add(DemoMarker(name=DEMO_MARKER, loaded_at=self.start))
            # Another loader may have finished first: the data is there either way.
            with contextlib.suppress(IntegrityError):
                await uow.commit()


# --- report -------------------------------------------------------------------------------------

_COUNTED: tuple[tuple[str, type[object]], ...] = (
    ("departments", Department), ("customers", Customer), ("contacts", Contact), ("products", Product),
    ("installed_products", InstalledProduct), ("service_stations", ServiceStation), ("parts", Part),
    ("kb_articles", KbArticle), ("service_requests", ServiceRequest), ("repair_orders", RepairOrder),
    ("surveys", Survey), ("opportunities", Opportunity), ("visits", Visit), ("tasks", Task),
)


async def _counts(core: Core) -> dict[str, int]:
    """Rows of each kind in the database (the demo, plus anything that was there before)."""
    counts: dict[str, int] = {}
    async with core.uow() as uow:
        session = uow.session
        staff = (await session.execute(
            select(func.count()).select_from(User).where(User.role != Role.CUSTOMER.value))).scalar_one()
        customer_users = (await session.execute(
            select(func.count()).select_from(User).where(User.role == Role.CUSTOMER.value))).scalar_one()
        counts["staff"], counts["customer_users"] = staff, customer_users
        for name, model in _COUNTED:
            counts[name] = (await session.execute(select(func.count()).select_from(model))).scalar_one()
    return counts


async def _personas(core: Core) -> list[tuple[str, str, str]]:
    """Who to sign in as, and what to try; references are looked up so they match this database."""
    async with core.uow() as uow:
        session = uow.session
        job = (await session.execute(
            select(RepairOrder.id).join(User, User.id == RepairOrder.technician_id)
            .where(User.username == "zhang.wei", RepairOrder.status == RepairStatus.DISPATCHED.value)
            .order_by(RepairOrder.id.desc()).limit(1)
        )).scalar_one_or_none()
        deal = (await session.execute(
            select(Opportunity.id).where(Opportunity.name == ACME_DEAL).limit(1))).scalar_one_or_none()
    job_ref = f"RO-{job}" if job else "RO-n"
    deal_ref = f" (OP-{deal})" if deal else ""
    return [
        ("wang.fang", "customer",
         "王芳's household, identity demo-customer (rest/web/terminal). Try '我的洗衣机WM2023-00917漏水' (in "
         "warranty), 'AB12345还在保修期吗？' (expired), '洗碗机显示E13'."),
        ("oliver.smith", "customer",
         "English-speaking household, identity demo-customer-en. Try 'where is my technician?', 'error E13 "
         "on my dishwasher', 'is WM3000-00342 still under warranty?'."),
        ("li.lei", "rep",
         f"Shanghai rep, owns Acme Appliances Ltd, identity demo-rep. Try 'visited Acme today with Li Na, "
         f"discussed "
         f"renewal, next step send quote by Friday', 'move the Acme renewal{deal_ref} to negotiation, 50k'."),
        ("zhang.wei", "technician",
         f"Shanghai technician, identity demo-technician. Try 'my jobs today', 'accept {job_ref}', "
         f"'{job_ref} done, replaced pump, part P-100'."),
        ("chen.jing", "manager",
         "Sales director heading the group, identity demo-manager. Try 'pipeline this quarter', "
         "'show me Acme', 'mark the hospital deal as won'."),
        ("sun.li", "manager",
         "Shanghai service manager (complaints and escalations land here), identity demo-service-manager. "
         "Try 'any complaints this week?', 'escalated requests', 'status of SR-9'."),
        ("liu.yang", "agent",
         "Shanghai service desk, identity demo-agent. Try 'status of SR-1', "
         "'error E21 on the washing machine'."),
        ("admin", "admin", "Sees everything, identity demo-admin; add yourself with `crmbot users add`."),
    ]


# --- small pure helpers -------------------------------------------------------------------------


def _sold_on_for(ends_on: date, months: int) -> date:
    """A sale date whose warranty of `months` ends on `ends_on` (or the nearest day before it can)."""
    guess = _months_before(ends_on + timedelta(days=1), months)
    for shift in range(-3, 4):
        candidate = guess + timedelta(days=shift)
        if warranty_end(candidate, months) == ends_on:
            return candidate
    return guess


def _months_before(day: date, months: int) -> date:
    """The same day `months` earlier, clamped to the end of a shorter month."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    probe = date(year, month, 1)
    last_day = (add_months(probe, 1) - timedelta(days=1)).day
    return date(year, month, min(day.day, last_day))


def _staff_phone(username: str) -> str:
    """A stable mobile number per staff member, independent of the plan's random stream."""
    rng = random.Random(f"{SEED}:{username}")
    return f"+86 139 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"


def _round_amount(amount: Decimal) -> Decimal:
    """Deal amounts move in whole hundreds of yuan."""
    return (amount / 100).quantize(Decimal(1)) * 100


def _kb_code(code: str, lang: str) -> str:
    """The article in the customer's language when there is one."""
    translated = f"{code}-ZH"
    if lang == "zh" and any(row[0] == translated for row in _KB):
        return translated
    return code


_PINYIN = {name: slug for name, slug in (*_ZH_PEOPLE, *_EN_PEOPLE)}
_PINYIN.update({"钱小红": "qian.xiaohong", "Li Na": "li.na", "Tom Baker": "tom.baker"})


def _slug_for(person: str) -> str:
    """An e-mail local part for a person."""
    if person in _PINYIN:
        return _PINYIN[person]
    for rows in (_END, _INTERMEDIATE, _PUBLIC):
        for _name, _slug, _city, _segment, _lang, user in rows:
            if user is not None and user[1] == person:
                return user[0]
        for name, slug, *_rest in rows:
            if name == person:
                return slug
    return "contact"

